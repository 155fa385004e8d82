"""A run folder belongs to one run: a new run needs an empty folder, a resumed one the same settings.

Both the Python API (`engine.trainer.train`) and the CLI pass through `claim_run_folder`, so a new run
can never write into an older run's folder (whose checkpoints its retention would delete, and whose
`--resume` would then continue the older run), and a resume can change only what does not change the
computation.
"""

from pathlib import Path

from medfound.engine.config import CONFIG_NAME, check_resumable, load_config, save_config
from medfound.engine.distributed import DistContext
from medfound.errors import ConfigError, first_items


def claim_run_folder(
    run_dir: Path, config, *, resume: bool, may_change: frozenset[str], ctx: DistContext
) -> None:
    """Check `run_dir` for a new or resumed run of `config`; a new run's config is saved there.

    Rank 0 checks and decides for every rank, so that all ranks raise together (a ConfigError, or a
    RankFailure for anything else, a full disk say) instead of some waiting forever.
    """

    def check_and_save() -> None:
        _check(Path(run_dir), config, resume, may_change)
        if not resume:
            save_config(config, Path(run_dir) / CONFIG_NAME)

    ctx.on_main(check_and_save)


def _check(run_dir: Path, config, resume: bool, may_change: frozenset[str]) -> None:
    saved = run_dir / CONFIG_NAME
    if not resume:
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"{run_dir}: exists and is not a folder; choose another --out")
        entries = sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []
        if entries:
            raise ConfigError(
                f"{run_dir} is not empty ({first_items(entries, 4)}); a new run needs an empty "
                "folder: pass --resume to continue the run there, or choose another --out"
            )
        return
    if not saved.exists():
        raise ConfigError(f"--resume: {run_dir} holds no run to continue (no {saved.name})")
    check_resumable(load_config(type(config), saved), config, may_change, saved)
