"""Messages reach the terminal literally: brackets in paths and commands are not taken as markup."""

import typer
from typer.testing import CliRunner

from medfound.cli import errors
from medfound.errors import ConfigError

MESSAGE = "scan[1].dcm: run pip install 'medfound[extra]' then retry [bold]now[/bold]"


def test_error_messages_print_brackets_literally(monkeypatch):
    monkeypatch.setattr(errors, "stderr", errors.text_console(stderr=False))  # to the runner's out
    app = typer.Typer()

    @app.command()
    @errors.handles_errors
    def fail() -> None:
        raise ConfigError(MESSAGE)

    result = CliRunner().invoke(app, [], terminal_width=200)
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {MESSAGE}"


def test_every_cli_console_prints_text_as_it_is():
    console = errors.text_console(stderr=False)
    with console.capture() as captured:
        console.print(MESSAGE)
    assert captured.get().strip() == MESSAGE


def test_no_cli_module_keeps_a_markup_console():
    import importlib
    import pkgutil

    from rich.console import Console

    import medfound.cli

    consoles = []
    for module in pkgutil.iter_modules(medfound.cli.__path__):
        loaded = importlib.import_module(f"medfound.cli.{module.name}")
        consoles += [v for v in vars(loaded).values() if isinstance(v, Console)]
    assert len(consoles) >= 10 and not any(c._markup for c in consoles)


def test_no_help_text_loses_brackets_to_markup():
    import click
    import typer
    from rich.markup import render

    from medfound.cli.main import app

    def texts(command: click.Command):
        yield command.name, command.help or ""
        for param in command.params:
            yield f"{command.name} {param.name}", getattr(param, "help", None) or ""
        for sub in getattr(command, "commands", {}).values():
            yield from texts(sub)

    for where, text in texts(typer.main.get_command(app)):
        assert render(text).plain == text.replace("\\[", "["), where
