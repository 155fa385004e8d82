"""Print user errors without a traceback and exit non-zero."""

import functools
import logging

import typer
from rich.console import Console
from rich.text import Text

from medfound.errors import MedfoundError


def text_console(stderr: bool = True) -> Console:
    """A console that prints text as it is: no markup, no highlighting. Messages carry paths and
    commands such as `pip install 'medfound[extra]'`, whose brackets rich would take as markup and
    drop."""
    return Console(stderr=stderr, markup=False, highlight=False)


stderr = text_console()


def handles_errors(command):
    """Decorator for CLI commands: MedfoundError -> one red line on stderr, exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        _configure_logging()
        try:
            return command(*args, **kwargs)
        except MedfoundError as exc:
            stderr.print(Text.assemble(("error: ", "red"), str(exc)), soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _configure_logging() -> None:
    logger = logging.getLogger("medfound")
    if logger.handlers:
        return
    from rich.logging import RichHandler

    handler = RichHandler(console=stderr, show_path=False, show_time=False)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
