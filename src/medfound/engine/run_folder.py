"""A run folder belongs to one run: a new run needs an empty folder, a resumed one the same settings.

Both the Python API (`engine.trainer.train`) and the CLI pass through `claim_run_folder`, so a new run
can never write into an older run's folder (whose checkpoints its retention would delete, and whose
`--resume` would then continue the older run), and a resume can change only what does not change the
computation.
"""

from pathlib import Path

from medfound.engine.config import CONFIG_NAME, check_resumable, load_config, save_config
from medfound.engine.distributed import DistContext
from medfound.errors import ConfigError, MedfoundError, first_items


def claim_run_folder(
    run_dir: Path, config, *, resume: bool, may_change: frozenset[str], ctx: DistContext
) -> None:
    """Check `run_dir` for a new or resumed run of `config`; a new run's config is saved there.

    Rank 0 checks and decides for every rank (the folder may be on a disk only rank 0 sees), so all
    ranks raise the same error together instead of some waiting forever.
    """
    problem = None
    if ctx.is_main:
        try:
            _check(Path(run_dir), config, resume, may_change)
        except MedfoundError as exc:
            problem = str(exc)
    problem = ctx.broadcast(problem)
    if problem is not None:
        raise ConfigError(problem)
    if ctx.is_main and not resume:
        save_config(config, Path(run_dir) / CONFIG_NAME)
    ctx.barrier()


def _check(run_dir: Path, config, resume: bool, may_change: frozenset[str]) -> None:
    saved = run_dir / CONFIG_NAME
    if not resume:
        entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{run_dir}: exists and is not a folder; choose another --out")
        if entries:
            raise ConfigError(
                f"{run_dir} is not empty ({first_items(entries, 4)}); a new run needs an empty "
                "folder: pass --resume to continue the run there, or choose another --out"
            )
        return
    if not saved.exists():
        raise ConfigError(f"--resume: {run_dir} holds no run to continue (no {saved.name})")
    check_resumable(load_config(type(config), saved), config, may_change, saved)
