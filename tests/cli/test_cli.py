from typer.testing import CliRunner

from medfound.cli.main import app
from medfound.models import list_models

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("embed", "export", "models", "demo", "pretrain", "convert"):
        assert command in result.output


def test_pretrain_help_shows_the_defaults_of_the_config():
    result = runner.invoke(app, ["pretrain", "simclr", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for default in (
        "(default: bit-m-r50x1)",
        "(default: path)",
        "(default: lars)",
        "(default: 0.3)",
    ):
        assert default in result.output  # rich would swallow a bare [bit-m-r50x1] as markup


def test_models_table_and_card():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for card in list_models():
        assert card.name in result.output
    shown = runner.invoke(app, ["models", "show", "cxr-152x2-remedis-m"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert "4096" in shown.output and "PhysioNet" in shown.output and "[-1, 1]" in shown.output


def test_user_errors_exit_2_without_traceback(tmp_path):
    result = runner.invoke(app, ["models", "show", "nosuchmodel"])
    assert result.exit_code == 2 and "unknown model 'nosuchmodel'" in result.output
    result = runner.invoke(
        app, ["embed", str(tmp_path), "-m", "cxr-50x1-remedis-m", "-o", str(tmp_path / "o.parquet")]
    )
    assert result.exit_code == 2 and "needs weights" in result.output
    npz = tmp_path / "w.npz"
    npz.write_bytes(b"")
    result = runner.invoke(app, ["embed", str(tmp_path), "-w", str(npz), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "give --model NAME" in result.output  # no card to name it
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_export_command(tmp_path):
    out = tmp_path / "r18.safetensors"
    result = runner.invoke(
        app, ["export", "timm:resnet18", "--random-init", "--format", "safetensors", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1_000_000


def test_pretrain_help_defaults_are_the_config_defaults():
    import inspect
    import re

    from medfound.cli.pretrain import simclr
    from medfound.tasks.pretrain import SimCLRConfig

    config, checked = SimCLRConfig(), 0
    for name, param in inspect.signature(simclr.__wrapped__).parameters.items():
        said = re.search(r"default: ([^)]+)\)?$", param.default.help or "")
        if not said or not hasattr(config, name):
            continue
        value, text = getattr(config, name), said.group(1)
        if value is None or isinstance(value, bool):
            assert text in (("on",) if value else ("off", "preset's")), name
        elif isinstance(value, int | float):
            assert float(text) == value, name
        else:
            assert text == value, name
        checked += 1
    assert checked >= 15
