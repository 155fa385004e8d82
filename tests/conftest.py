import logging

import pytest
import torch


@pytest.fixture(autouse=True)
def _quiet_and_deterministic():
    torch.manual_seed(0)
    logging.getLogger("medfound").setLevel(logging.INFO)
    yield
