"""UID policy: keyed, stable hashes; the installation salt made once, privately, or a clear error."""

import stat

import pytest

from medfound.errors import ConfigError
from medfound.privacy import UidPolicy, uid_policy


def test_hashes_are_keyed_stable_and_hide_the_uid():
    uid = "1.2.826.0.1.3680043.8.498.1"
    a, b = UidPolicy(salt=b"s" * 16), UidPolicy(salt=b"t" * 16)
    assert a(uid) == UidPolicy(salt=b"s" * 16)(uid) != b(uid)
    assert uid not in a(uid) and len(a(uid)) == 24
    assert a.identity != b.identity and b"s" * 16 not in a.identity.encode()
    assert UidPolicy(keep=True)(uid) == uid
    with pytest.raises(ConfigError, match="at least 16"):
        uid_policy(salt="short")


def test_the_installation_salt_is_created_once_and_private(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDFOUND_UID_SALT", raising=False)
    monkeypatch.setenv("MEDFOUND_CONFIG_DIR", str(tmp_path / "cfg"))
    first = uid_policy()
    assert uid_policy().salt == first.salt
    salt_file = tmp_path / "cfg" / "uid-salt"
    assert stat.S_IMODE(salt_file.stat().st_mode) == 0o600
    assert salt_file.read_text().encode() == first.salt


def test_an_unwritable_config_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDFOUND_UID_SALT", raising=False)
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("MEDFOUND_CONFIG_DIR", str(tmp_path / "file" / "medfound"))
    with pytest.raises(ConfigError, match="MEDFOUND_UID_SALT"):
        uid_policy()
    monkeypatch.setenv("MEDFOUND_UID_SALT", "a-site-wide-secret-salt")
    assert uid_policy().salt == b"a-site-wide-secret-salt"
