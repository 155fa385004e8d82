"""File-system helpers every layer uses: durable atomic writes and streamed hashing.

`atomic_write` is what makes "a crash never leaves a partial or empty file" true: the data go to a
temporary file in the target's folder, are fsync'ed, renamed onto the target, and the folder is fsync'ed
so that the rename itself survives a power loss (a rename without the data's fsync can leave an empty
"complete" file after a crash on ext4/XFS).
"""

import hashlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

TEMP_SUFFIX = ".partial"


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> None:
    """Call write(tmp_path), fsync it, rename it onto `path`, fsync the folder.

    A crash at any moment leaves either the previous `path` or the complete new one. The file gets the
    usual mode (0666 less the umask), which the kernel applies when the file is created; reading the
    umask would need os.umask(), which changes it process-wide for a moment (a race with threads).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _create_temp(path: Path) -> Path:
    """An empty new file beside `path`, created with mode 0666 & ~umask (O_EXCL: never reused)."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def remove_temporaries(folder: str | Path, name: str = "*") -> int:
    """Delete the temporary files `atomic_write` left in `folder` for targets named `name` (all by
    default) when a process was killed mid-write; call it only where no other writer is active."""
    found = list(Path(folder).glob(f".{name}.*{TEMP_SUFFIX}")) if Path(folder).is_dir() else []
    for tmp in found:
        tmp.unlink(missing_ok=True)
    return len(found)


def fsync_file(path: str | Path) -> None:
    """Flush a file's data and metadata to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | Path) -> None:
    """Flush a folder's entries (renames, unlinks) to the disk; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on folders; the rename is as durable as they allow
    finally:
        os.close(fd)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    update_digest(digest, path)
    return digest.hexdigest()


def update_digest(digest, path: str | Path) -> None:
    """Feed a file's bytes into a hashlib digest, a megabyte at a time."""
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
