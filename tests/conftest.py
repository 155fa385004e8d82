import logging

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _private_config_folder(tmp_path_factory):
    """The installation's UID salt goes to a folder of the test session, never ~/.config; torchrun
    and CLI subprocesses inherit it through the environment."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDFOUND_CONFIG_DIR", str(tmp_path_factory.mktemp("config")))
        patch.delenv("MEDFOUND_UID_SALT", raising=False)
        yield


@pytest.fixture(autouse=True)
def _quiet_and_deterministic():
    torch.manual_seed(0)
    logging.getLogger("medfound").setLevel(logging.INFO)
    yield
