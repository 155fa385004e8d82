"""DICOM instance and series UIDs never leave the readers as they are: a keyed hash replaces them.

DICOM's de-identification profile (PS3.15 Annex E, Basic Profile) lists SOPInstanceUID and
SeriesInstanceUID for replacement: with access to the PACS, a UID leads back to the patient. medfound
puts a keyed hash (HMAC-SHA256) in their place in source ids, outputs and logs. The key ("salt") is
per installation (created once, kept in the user's config folder) or given by the user
(`MEDFOUND_UID_SALT`, or `UidPolicy(salt=...)`), so the same UID always gives the same id: resumed runs
and joins across outputs still work, while nobody without the salt can test a UID against an output.
Users inside their own PACS who need the UIDs ask for them (`--keep-uids`).
"""

import functools
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from medfound.errors import ConfigError

SALT_ENV = "MEDFOUND_UID_SALT"
_HASH_HEX = 24  # 96 bits: no collision among any plausible number of images


@dataclass(frozen=True)
class UidPolicy:
    """How UIDs appear in ids: kept, or replaced by HMAC-SHA256(salt, uid) (the default).

    Picklable, so DataLoader workers use the same policy as the main process.
    """

    keep: bool = False
    salt: bytes = b""

    def __post_init__(self):
        if not self.keep and len(self.salt) < 16:
            raise ConfigError("UID hashing needs a salt of at least 16 bytes")

    def __call__(self, uid: str) -> str:
        """The id to show for `uid`."""
        if self.keep:
            return uid
        return hmac.new(self.salt, uid.encode(), hashlib.sha256).hexdigest()[:_HASH_HEX]

    @property
    def identity(self) -> str:
        """What outputs record so that ids made with another policy are never mixed in."""
        if self.keep:
            return "uids-kept"
        return "uids-hashed:" + hashlib.sha256(b"medfound-salt-id" + self.salt).hexdigest()[:16]


def uid_policy(keep: bool = False, salt: str | None = None) -> UidPolicy:
    """The policy in force: UIDs kept when asked, else hashed with `salt`, `$MEDFOUND_UID_SALT`, or
    this installation's salt (created on first use)."""
    if keep:
        return UidPolicy(keep=True)
    salt = salt or os.environ.get(SALT_ENV)
    if salt:
        if len(salt) < 16:
            raise ConfigError(f"the UID salt must have at least 16 characters, got {len(salt)}")
        return UidPolicy(salt=salt.encode())
    return UidPolicy(salt=installation_salt())


def installation_salt() -> bytes:
    """This installation's secret salt: read from, or created once in, the config folder."""
    return _salt_at(_config_dir() / "uid-salt")


@functools.cache
def _salt_at(path: Path) -> bytes:
    try:
        if not path.exists():
            _create_salt(path)
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot keep this installation's UID salt ({exc}); set {SALT_ENV} to a "
            "secret of 16+ characters, or MEDFOUND_CONFIG_DIR to a writable folder"
        ) from exc
    if len(text) < 16:
        raise ConfigError(f"{path}: the UID salt is too short; delete the file to make a new one")
    return text.encode()


def _create_salt(path: Path) -> None:
    """Write a new random salt; the first of several processes racing here wins (link is atomic and
    refuses an existing name), so every rank of a job hashes with the same salt."""
    from medfound.files import TEMP_SUFFIX, fsync_dir, fsync_file

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(32))
    fsync_file(tmp)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    fsync_dir(path.parent)


def _config_dir() -> Path:
    if os.environ.get("MEDFOUND_CONFIG_DIR"):
        return Path(os.environ["MEDFOUND_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "medfound"
