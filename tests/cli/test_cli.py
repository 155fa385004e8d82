import dataclasses
import json
import re

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from medfound.cli.main import app
from medfound.models import get_card, list_models, load_model
from medfound.tasks.simclr_config import SimCLRConfig

runner = CliRunner()
WIDE = {"COLUMNS": "1000"}  # no wrapping: one table row or option per line


def _invoke(*args: str):
    return runner.invoke(app, list(args), env=WIDE)


def _cells(output: str) -> list[list[str]]:
    """The body rows of a rich table (lines drawn with │), as lists of stripped cells."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def test_help_lists_every_command_with_its_summary():
    result = _invoke("--help")
    assert result.exit_code == 0
    panel = result.output.split("Commands")[1]
    listed = dict(re.findall(r"^│ (\S+)\s{2,}(.+?)\s*│$", panel, flags=re.MULTILINE))
    expected = {"embed", "export", "models", "demo", "pretrain", "convert", "restore"}
    transfer = {"finetune", "probe", "predict", "example-data", "study", "report"}
    assert set(listed) == expected | transfer | {"plot-embeddings", "tile"}
    assert listed["models"] == "List the model zoo, or show one model's card."
    assert listed["demo"].startswith("Pretrain (SimCLR 2D, Models Genesis 3D), then transfer")


def test_models_lists_every_registered_card_with_its_contract():
    result = _invoke("models")
    assert result.exit_code == 0
    rows = _cells(result.output)
    cards = list_models()
    assert [row[0] for row in rows] == [card.name for card in cards]  # all, in registry order
    for row, card in zip(rows, cards, strict=True):
        size = card.input_size
        size = "x".join(map(str, size)) if isinstance(size, tuple) else f"{size}x{size}"
        assert row[1:6] == [card.family, card.modality, size, str(card.embedding_dim), card.preset]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--modality", "pathology"], lambda c: "pathology" in c.modality.lower()),
        (["--family", "vit"], lambda c: c.family == "vit"),
        (
            ["--modality", "ct", "--family", "genesis"],  # a word: not the ct of "abstract"
            lambda c: c.name in ("unet3d_genesis.chest_ct", "unet3d_genesis_w8.mri"),
        ),
        (
            ["--modality", "X-RAY", "-f", "*rad*"],
            lambda c: c.name == "vit_base_patch14_dinov2.rad_dino",
        ),
    ],
)
def test_models_filter_by_modality_and_family(options, expected):
    result = _invoke("models", *options)
    assert result.exit_code == 0
    listed = [row[0] for row in _cells(result.output)]
    assert listed == [c.name for c in list_models() if expected(c)] and listed


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("resnetv2_50x1*", lambda c: c.architecture == "resnetv2_50x1_bit"),
        ("*-remedis-m", lambda c: "remedis" in c.name and c.name.endswith("_m")),  # aliases
    ],
)
def test_models_filter_lists_exactly_the_matching_cards(pattern, expected):
    result = _invoke("models", "--filter", pattern)
    assert result.exit_code == 0
    assert [row[0] for row in _cells(result.output)] == [
        c.name for c in list_models() if expected(c)
    ]


@pytest.mark.parametrize(
    "name", ["cxr-152x2-remedis-m", "unet3d_genesis.chest_ct", "timm:resnet18", "virchow2"]
)
def test_models_show_prints_the_whole_card(name):
    card = get_card(name)
    result = _invoke("models", "show", name)
    assert result.exit_code == 0
    shown = dict(_cells(result.output))
    assert result.output.split("\n", 1)[0].strip() == card.name  # an alias shows its model
    expected = {key: str(value) for key, value in card.to_dict().items()}
    assert {key: shown.get(key) for key in expected} == expected
    assert shown["embedding_dim"] == str(card.embedding_dim)
    assert shown["in_channels"] == str(card.in_channels)
    assert shown["input_contract"] == card.input_contract
    if name == "cxr-152x2-remedis-m":
        assert shown["aliases"] == name
        assert "PhysioNet" in shown["weights_source"] and "[-1, 1]" in shown["input_contract"]
    if name == "virchow2":
        assert "registers skipped" in shown["embedding definition"]
        assert shown["register_tokens"] == "4" and "CC-BY-NC-ND" in shown["licence"]


SIMCLR = ["pretrain", "simclr", "--out", "{tmp}/run", "--data", "{tmp}/imgs"]
EMBED = ["embed", "{tmp}/imgs", "-o", "{tmp}/out"]
# case -> (arguments, with {tmp} for the test's folder; what the one error line must say)
USER_ERRORS = {
    "unknown model": (["models", "show", "nosuchmodel"], "unknown model 'nosuchmodel'"),
    "empty filter": (["models", "--filter", "zzz*"], "no registered model matches name 'zzz*'"),
    "no weights": ([*EMBED, "-m", "cxr-50x1-remedis-m"], "'cxr-50x1-remedis-m' needs weights"),
    "missing weights": (
        [*EMBED, "-m", "timm:resnet18", "-w", "{tmp}/none.safetensors"],
        "none.safetensors: weight file not found",
    ),
    "weights without a card": ([*EMBED, "-w", "{tmp}/empty.npz"], "give --model NAME"),
    "export format": (
        ["export", "timm:resnet18", "--random-init", "-f", "zip", "-o", "{tmp}/out"],
        "--format must be one of ('onnx', 'torchscript', 'safetensors'), got 'zip'",
    ),
    "config value": ([*SIMCLR, "--temperature", "0"], "temperature must be > 0, got 0.0"),
    "no start named": (
        [*SIMCLR, "-m", "timm:test_resnet"],
        "or say --init random to pretrain from a random initialisation on purpose",
    ),
    "config file": (
        [*SIMCLR, "--config", "{tmp}/typo.yaml"],
        "typo.yaml: unknown field(s) ['temprature']",
    ),
    "view value": (
        [*SIMCLR, "-m", "timm:test_resnet", "--blur-p", "1.5"],
        "blur_p must be in [0, 1], got 1.5",
    ),
}


@pytest.mark.parametrize("case", list(USER_ERRORS))
def test_user_errors_exit_2_with_one_line_naming_the_problem(case, tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "typo.yaml").write_text("temprature: 0.2\n")
    args, message = USER_ERRORS[case]
    result = _invoke(*(arg.format(tmp=tmp_path) for arg in args))
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)  # handled, not an uncaught exception
    assert result.stdout == "" and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0]  # (log lines may come before it)
    for written in ("out", "run"):  # nothing written on the way to the error
        assert not (tmp_path / written).exists(), written


def test_export_safetensors_holds_the_model_and_its_card(tmp_path):
    out = tmp_path / "r18.safetensors"
    result = _invoke(
        "export", "timm:resnet18", "--random-init", "-f", "safetensors", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    original = load_model("timm:resnet18", random_init=True)  # seeded: the exported weights
    with safe_open(str(out), "pt") as f:
        assert set(f.keys()) == set(original.network.state_dict())
        card = json.loads(f.metadata()["medfound_card"])
    assert card["name"] == "timm:resnet18" and card["embedding_dim"] == 512
    reloaded = load_model("timm:resnet18", out)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        embedding = reloaded(x)
        assert embedding.shape == (2, original.card.embedding_dim)
        torch.testing.assert_close(embedding, original(x))


def test_export_torchscript_returns_the_embedding_and_stages(tmp_path):
    out = tmp_path / "r18.pt"
    result = _invoke(
        "export", "timm:resnet18", "--random-init", "-f", "torchscript", "--image-size", "64",
        "-o", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    extra = {"medfound_metadata.json": ""}
    scripted = torch.jit.load(str(out), _extra_files=extra)
    original = load_model("timm:resnet18", random_init=True)
    x = torch.rand(1, 3, 64, 64)
    with torch.inference_mode():
        embedding, *stages = scripted(x)
        torch.testing.assert_close(embedding, original(x))
    assert embedding.shape == (1, 512) and len(stages) == len(original.stage_names)
    assert json.loads(extra["medfound_metadata.json"])["outputs"] == json.dumps(
        ["embedding", *original.stage_names]
    )


def _shown(value) -> str:
    """How a config default reads in --help."""
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def test_pretrain_help_offers_every_config_field_with_its_default():
    result = _invoke("pretrain", "simclr", "--help")
    assert result.exit_code == 0
    options = {}
    for line in result.output.splitlines():
        option = re.match(r"│\s+\*?\s*(--[a-z0-9-]+)\b.*?(?:\(default: (.*)\))?\s*│?$", line)
        if option:
            options[option.group(1)] = option.group(2)
    config = SimCLRConfig()
    for field in dataclasses.fields(SimCLRConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in options, f"{flag} missing from the help"
        value, shown = getattr(config, field.name), options[flag]
        if isinstance(value, float):
            assert float(shown) == value, flag
        else:
            assert shown == _shown(value), flag
    assert options["--model"] == "resnetv2_50x1_bit.bit_m_in21k" and options["--lr"] == "0.3"


def test_the_command_line_starts_without_importing_torch():
    """`medfound --help` and option parsing stay fast: torch loads only when a command runs."""
    import subprocess
    import sys

    code = "import sys, medfound.cli.main; print(sorted(m for m in sys.modules if m == 'torch'))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
