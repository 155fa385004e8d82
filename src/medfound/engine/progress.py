"""A rich progress bar for the main rank (a no-op elsewhere), with a running rate."""

import contextlib
import time
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(
    total: int, label: str, unit: str = "img", enabled: bool = True, completed: int = 0
) -> Iterator[Callable[..., None]]:
    """Yields `advance(n_steps, n_items=None, note="")`; the rate is items/s since the start."""
    if not enabled or total <= completed:
        yield lambda n, items=None, note="": None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    start, items_done = time.perf_counter(), 0
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(label, total=total, completed=completed, rate="", note="")

        def advance(n: int, items: int | None = None, note: str = "") -> None:
            nonlocal items_done
            items_done += n if items is None else items
            rate = items_done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=n, rate=f"{rate:.1f} {unit}/s", note=note)

        yield advance
