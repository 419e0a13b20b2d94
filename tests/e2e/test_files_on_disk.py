"""Files on disk against another user of the host (issue 23).

The attacker is a real second user: ``nobody`` (uid 65534), through setpriv,
running the system's python with nothing of taskmaster.  In a shared sticky
directory (mode 1777, like /tmp) it plants what the master will find there -
a state file or a failures file whose pickled job runs a command, symbolic
links at the names the master writes - and root then runs the real commands
in that directory.  A refused file is one line, exit 2, naming the file and
what to do; no planted pickle runs; no file the links point at changes.

Needs root (to become nobody); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import tcp_address, tm, write_module

from taskmaster.launch import target
from taskmaster.master import checkpoint
from taskmaster.master import failures_file as failures

NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"
VICTIM_TEXT = b"root's private data\n"

# Run by nobody with the system's python: plants one thing and exits.
PLANT = r"""
import base64, json, os, pickle, shlex, sys

what, path = sys.argv[1], sys.argv[2]


class Payload:
    # Unpickling this runs a shell command as whoever unpickles it.
    def __reduce__(self):
        return (os.system, ("touch " + shlex.quote(sys.argv[3]),))


def payload():
    return base64.b64encode(pickle.dumps(Payload(), protocol=4)).decode()


if what == "state":
    target, kwargs = sys.argv[4], json.loads(sys.argv[5])
    doc = {"format": "taskmaster-state", "version": 1, "target": target, "kwargs": kwargs, "position": 0,
           "anchor": payload(), "anchor_repr": "0", "resolved": [], "finished": 0, "failed": 0,
           "complete": False, "total": None, "updated": "2026-12-07T00:00:00+0000"}
    with open(path, "w") as f:
        json.dump(doc, f)
elif what == "failures":
    entry = {"position": 0, "job_repr": "0", "type": "ValueError", "message": "x", "traceback": "",
             "attempts": 1, "slave": "s-1", "time": "2026-12-07T00:00:00+0000", "job": payload()}
    with open(path, "w") as f:
        f.write(json.dumps(entry) + "\n")
elif what == "file":
    with open(path, "w") as f:
        f.write("planted\n")
elif what == "symlink":
    os.symlink(sys.argv[3], path)
elif what == "symlinks":  # path is a prefix: path1 .. pathN
    for n in range(1, int(sys.argv[4]) + 1):
        os.symlink(sys.argv[3], path + str(n))
"""

# The jobs: n integers; TM_FAIL_EVERY=k makes every k-th job fail.
JOBS = """
import os

def get_jobs(last=0, n="10"):
    yield from range(int(last), int(n))

def handle_job(i):
    every = int(os.environ.get("TM_FAIL_EVERY", "0"))
    if every and i % every == 0:
        raise ValueError(f"job {i} fails on purpose")
"""


@pytest.fixture
def shared(tmp_path):
    """(shared sticky directory, root-only directory): the attacker writes in the first only."""
    if os.geteuid() != 0:
        pytest.skip("playing another user (nobody, uid 65534) needs root")
    if shutil.which("setpriv") is None or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("needs setpriv and /usr/bin/python3 to play the other user")
    directory = Path(tempfile.mkdtemp(prefix="tm-shared-", dir="/tmp"))
    os.chmod(directory, 0o1777)
    try:
        yield directory, tmp_path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def plant(where: Path, what: str, path: Path, *args: str) -> None:
    """nobody plants `what` at `path` (in the shared directory)."""
    argv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    argv += [SYSTEM_PYTHON, "-I", "-c", PLANT, what, str(path), *map(str, args)]
    result = subprocess.run(argv, cwd=where, capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert os.lstat(path if what != "symlinks" else f"{path}1").st_uid == NOBODY


def victim(private: Path) -> Path:
    """A root-owned file of mode 0600 that no run should ever touch."""
    path = private / "victim"
    path.write_bytes(VICTIM_TEXT)
    path.chmod(0o600)
    return path


def jobs_module(private: Path) -> tuple[Path, str, Path]:
    """(module, its target identity, default state file name)."""
    module = write_module(private, "jobs", JOBS)
    identity = target.identity(str(module), "get_jobs")
    return module, identity, Path(checkpoint.default_path(identity, {"n": "10"}))


def refusal(result: subprocess.CompletedProcess, path: Path, *fragments: str) -> str:
    """Exit 2 with one line naming `path` and how to fix it; the line."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert path.name in lines[0], lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.timeout(90)
def test_a_planted_state_file_is_refused_before_its_pickle_runs(procs, shared):
    where, private = shared
    module, identity, name = jobs_module(private)
    marker = private / "pwned"
    state = where / name
    plant(where, "state", state, marker, identity, json.dumps({"n": "10"}))

    result = procs.run(tm("run", module, 1, "n=10", "--no-progress"), cwd=where, timeout=60)

    line = refusal(result, state, "not owned by this user")
    assert "--state-file" in line and "remove" in line, line
    assert "resuming" not in result.stderr
    assert not marker.exists(), "the planted pickle ran as root"


@pytest.mark.timeout(90)
def test_a_planted_failures_file_is_refused_before_its_pickles_run(procs, shared):
    where, private = shared
    module, identity, name = jobs_module(private)
    marker = private / "pwned"
    failures_path = where / failures.default_path(str(name))
    plant(where, "failures", failures_path, marker)

    result = procs.run(tm("run", module, 1, "n=10", "--no-progress", "--retry-failed"), cwd=where, timeout=60)

    line = refusal(result, failures_path, "not owned by this user")
    assert "--failures-file" in line, line
    assert not marker.exists(), "the planted pickle ran as root"


@pytest.mark.timeout(90)
def test_a_group_writable_state_file_of_our_own_is_refused(procs, shared):
    """Ours, but anyone in the group could have put a pickle in it."""
    where, private = shared
    module, _, name = jobs_module(private)
    procs.run(tm("run", module, 1, "n=10", "--no-progress"), cwd=where, timeout=60)
    state = where / name
    state.chmod(0o620)
    before = state.read_bytes()

    result = procs.run(tm("run", module, 1, "n=10", "--no-progress"), cwd=where, timeout=60)

    line = refusal(result, state, "writable by group or others")
    assert "chmod go-w" in line, line
    assert state.read_bytes() == before


@pytest.mark.timeout(90)
def test_symlinks_planted_at_the_checkpoints_temporary_names_are_not_followed(procs, shared):
    """The state file's temporary file is never a name someone else chose."""
    where, private = shared
    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare --pid (a process id the attacker can predict)")
    module, _, name = jobs_module(private)
    target_file = victim(private)
    state = where / name
    # In a fresh pid namespace the processes of the run have small ids: 1..300
    # covers every name the old f"{state}.tmp-{pid}" could have taken.
    plant(where, "symlinks", Path(f"{state}.tmp-"), target_file, 300)

    argv = ["unshare", "--pid", "--fork", "--mount-proc", *tm("run", module, 1, "n=10", "--no-progress")]
    result = procs.run(argv, cwd=where, timeout=60)

    assert result.returncode == 0, result.stderr
    assert target_file.read_bytes() == VICTIM_TEXT, "the master wrote through a planted symlink"
    info = os.lstat(state)
    assert stat.S_ISREG(info.st_mode) and info.st_uid == 0 and stat.S_IMODE(info.st_mode) == 0o600
    assert json.loads(state.read_text())["complete"] is True


@pytest.mark.timeout(90)
@pytest.mark.parametrize("which", ["state", "failures"])
def test_a_symlink_planted_at_the_state_or_failures_path_is_refused(procs, shared, which):
    where, private = shared
    module, _, name = jobs_module(private)
    target_file = victim(private)
    path = where / (name if which == "state" else failures.default_path(str(name)))
    plant(where, "symlink", path, target_file)

    # Every other job fails: without the check they would be appended to the link's target.
    result = procs.run(
        tm("run", module, 1, "n=10", "--no-progress", "--max-retries", "0"),
        cwd=where,
        env={"TM_FAIL_EVERY": "2"},
        timeout=60,
    )

    line = refusal(result, path, "symbolic link")
    assert f"--{which}-file" in line, line
    assert target_file.read_bytes() == VICTIM_TEXT
    assert os.path.islink(path), "the planted link is left for its owner to remove"


@pytest.mark.timeout(90)
@pytest.mark.parametrize("planted", ["symlink", "file"])
def test_a_log_file_planted_by_someone_else_is_refused(procs, shared, planted):
    where, private = shared
    module, _, _ = jobs_module(private)
    target_file = victim(private)
    log = where / "run.log"
    plant(where, planted, log, target_file)
    before = log.read_bytes()

    result = procs.run(tm("run", module, 1, "n=10", "--no-progress", "--log-file", log), cwd=where, timeout=60)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"log file {log}" in result.stderr and "--log-file" in result.stderr, result.stderr
    assert target_file.read_bytes() == VICTIM_TEXT
    assert log.read_bytes() == before, "nothing of the run was written where the other user reads"


@pytest.mark.timeout(90)
def test_every_file_the_master_writes_is_private_and_a_planted_result_link_is_replaced(procs, shared):
    """State, failures, result and log files: mode 0600, whatever the umask; a link is not followed."""
    where, private = shared
    module, _, name = jobs_module(private)
    target_file = victim(private)
    result_path, log = where / "result.json", where / "master.log"
    plant(where, "symlink", result_path, target_file)
    address = tcp_address()
    env = {"TM_FAIL_EVERY": "3"}
    options = ["--no-progress", "--max-retries", "0", "--result-file", result_path, "--log-file", log]
    old_umask = os.umask(0)  # the processes started get it: their files' modes are what they ask for
    try:
        master = procs.start(tm("master", module, "n=10", "--address", address, *options), cwd=where, env=env)
        slave = procs.start(tm("slave", module, "--address", address, "--no-progress"), cwd=where, env=env)
    finally:
        os.umask(old_umask)
    _, err = master.communicate(timeout=60)
    slave.communicate(timeout=30)
    assert master.returncode == 1, err  # some jobs failed: exit 1

    assert target_file.read_bytes() == VICTIM_TEXT, "the result went through the planted link"
    assert json.loads(result_path.read_text())["failed"] == 4
    for path in (where / name, where / failures.default_path(str(name)), result_path, log):
        info = os.lstat(path)
        assert stat.S_ISREG(info.st_mode), path
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (0, 0o600), (path, oct(info.st_mode))
    assert "fails on purpose" in log.read_text()
