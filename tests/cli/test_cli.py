from typer.testing import CliRunner

from medfound.cli.main import app
from medfound.models import list_models

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("embed", "export", "models", "demo"):
        assert command in result.output


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
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_export_command(tmp_path):
    out = tmp_path / "r18.safetensors"
    result = runner.invoke(
        app, ["export", "timm:resnet18", "--random-init", "--format", "safetensors", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 1_000_000
