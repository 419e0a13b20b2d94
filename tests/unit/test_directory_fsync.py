"""fileio.write_atomically when the directory's fsync fails after the rename, in-process.

The data is in place by then (fsynced, renamed over the old file): the save
succeeded.  Only its survival of a power cut is in doubt, which is worth a
warning, once, not a failed checkpoint every time (some file systems refuse
fsync on a directory outright).
"""

from __future__ import annotations

import errno
import logging
import os
import stat

from taskmaster import fileio


def refuse_directory_fsync(monkeypatch) -> list[int]:
    refused: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return refused


def test_a_failed_directory_fsync_is_not_a_failed_write_and_is_said_once(tmp_path, monkeypatch, caplog):
    refused = refuse_directory_fsync(monkeypatch)
    path = tmp_path / "run.state"
    caplog.set_level(logging.WARNING)
    fileio.write_atomically(str(path), b"first\n")
    fileio.write_atomically(str(path), b"second\n")
    assert path.read_bytes() == b"second\n"
    assert len(refused) == 2  # tried every time
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert str(tmp_path) in warnings[0] and "Invalid argument" in warnings[0]
    assert sorted(os.listdir(tmp_path)) == ["run.state"]  # no temporary file left


def test_a_failed_file_fsync_is_still_a_failed_write(tmp_path, monkeypatch):
    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    path = tmp_path / "run.state"
    path.write_bytes(b"old\n")
    try:
        fileio.write_atomically(str(path), b"new\n")
    except OSError as exc:
        assert exc.errno == errno.EIO
    else:
        raise AssertionError("the write was reported as a success")
    assert path.read_bytes() == b"old\n"
    assert sorted(os.listdir(tmp_path)) == ["run.state"]
