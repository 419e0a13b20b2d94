"""The state and failures files are loaded only when they are ours alone (issue 23).

In-process, on real files: a file someone else owns, that group or others
may write, that is a link or a FIFO, is refused with one line saying how to
fix it - before any of its pickles is loaded - and is left as it was.
The end-to-end version, with a real second user, is tests/e2e/test_files_on_disk.py.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import stat

import pytest

from taskmaster import fileio
from taskmaster.errors import UsageError
from taskmaster.master import checkpoint
from taskmaster.master import failures_file as failures

TARGET, KWARGS = "jobs.py:get_jobs", {"n": "10"}


class Payload:
    """Unpickling it creates the file `marker`: proof that a pickle was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_file(tmp_path, which: str, marker) -> str:
    job = base64.b64encode(pickle.dumps(Payload(str(marker)), protocol=4)).decode()
    if which == "state":
        path = str(tmp_path / "run.state")
        checkpoint.save(path, checkpoint.State(TARGET, dict(KWARGS), has_anchor=True, anchor=0))
        doc = json.loads(open(path, "rb").read())
        text = json.dumps({**doc, "anchor": job})
    else:
        path = str(tmp_path / "run.failures.jsonl")
        text = json.dumps({**failures.record(0, 0, "E", "m", "tb", 1, "s-1"), "job": job}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def load(which: str, path: str):
    if which == "state":
        return checkpoint.load(path, TARGET, KWARGS)
    return failures.FailureLog(path).read()


@pytest.mark.parametrize("which", ["state", "failures"])
def test_our_own_private_file_loads(tmp_path, which):
    marker = tmp_path / "loaded"
    load(which, write_file(tmp_path, which, marker))
    assert marker.exists(), "the check must not refuse the master's own files"


@pytest.mark.parametrize("which", ["state", "failures"])
@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666])
def test_a_file_group_or_others_may_write_is_refused_before_unpickling(tmp_path, which, mode):
    marker = tmp_path / "loaded"
    path = write_file(tmp_path, which, marker)
    os.chmod(path, mode)
    before = open(path, "rb").read()
    with pytest.raises(UsageError, match=rf"refusing the {which} file .*writable by group or others .*chmod go-w"):
        load(which, path)
    assert not marker.exists()
    assert open(path, "rb").read() == before and stat.S_IMODE(os.stat(path).st_mode) == mode


@pytest.mark.parametrize("which", ["state", "failures"])
def test_a_file_of_another_user_is_refused_before_unpickling(tmp_path, which):
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    marker = tmp_path / "loaded"
    path = write_file(tmp_path, which, marker)
    os.chown(path, 65534, 65534)
    with pytest.raises(UsageError, match=rf"refusing the {which} file .*not owned by this user .*owner uid 65534"):
        load(which, path)
    assert not marker.exists()


@pytest.mark.parametrize("which", ["state", "failures"])
def test_a_link_is_refused_even_to_our_own_file(tmp_path, which):
    marker = tmp_path / "loaded"
    real = write_file(tmp_path, which, marker)
    link = str(tmp_path / ("link." + which))
    os.symlink(real, link)
    with pytest.raises(UsageError, match=rf"refusing the {which} file {link}: it is a symbolic link.*remove it"):
        load(which, link)
    assert not marker.exists()


@pytest.mark.timeout(10)
@pytest.mark.parametrize("which", ["state", "failures"])
def test_a_fifo_is_refused_without_hanging(tmp_path, which):
    path = str(tmp_path / ("run." + which))
    os.mkfifo(path, 0o600)
    with pytest.raises(UsageError, match="not a regular file"):
        load(which, path)


def test_appending_refuses_a_link_and_a_file_of_another_user(tmp_path):
    real = tmp_path / "real"
    real.write_bytes(b"")
    real.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(PermissionError, match="symbolic link"):
        fileio.open_private_append(str(link))
    if os.geteuid() == 0:
        os.chown(real, 65534, 65534)
        with pytest.raises(PermissionError, match="not owned by this user"):
            fileio.open_private_append(str(real))
    assert real.read_bytes() == b""


def test_a_new_file_is_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        fileio.write_atomically(str(tmp_path / "a"), b"x")
        os.close(fileio.open_private_append(str(tmp_path / "b")))
    finally:
        os.umask(old)
    for name in ("a", "b"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"], "no temporary file left behind"
