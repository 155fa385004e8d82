"""Durable atomic writes: data and rename reach the disk, the mode follows the umask untouched."""

import os
import stat

import pytest

from medfound.files import atomic_write


def test_the_data_and_the_folder_are_fsynced_around_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "out.bin"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"payload"))
    assert target.read_bytes() == b"payload"
    kinds = [(kind, os.path.basename(path)) for kind, path in events]
    assert kinds[-2] == ("replace", "out.bin")
    assert kinds[-1] == ("fsync", tmp_path.name)  # the folder, after the rename
    assert kinds[0][0] == "fsync" and kinds[0][1].endswith(".partial")  # the data, before it


def test_the_process_umask_is_never_changed_and_still_applies(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:

        def no_umask(_mask):
            raise AssertionError("os.umask changes the mask of every thread")

        monkeypatch.setattr(os, "umask", no_umask)
        target = tmp_path / "out.txt"
        atomic_write(target, lambda tmp: tmp.write_text("x"))
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["out.txt"]
