"""A resume never skips a job that did not finish, whatever get_jobs yields the second time.

The modules here are the ones people write for a migration: get_jobs yields
what is still pending, and a finished job vanishes from it (a file deleted
from a folder, a row no longer matching ``WHERE NOT migrated``, a key a SCAN
no longer returns).  After SIGKILL of every process and the same command
again, the resumed iterator numbers another sequence than the first run's:
a resume that skipped by position would skip unfinished jobs and exit 0 with
files left over.  It must skip only jobs it knows finished, by what they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tm, wait_for, write_module

# Files left in a folder, in name order from `last` on; handling one deletes it.
FOLDER_MODULE = """
import os, time

TODO = os.environ["TM_TODO"]

def get_jobs(last="", **kwargs):
    for name in sorted(os.listdir(TODO)):
        if name >= last:
            yield name

def handle_job(name):
    time.sleep(float(os.environ.get("TM_SLEEP", "0")))
    try:
        os.unlink(os.path.join(TODO, name))
    except FileNotFoundError:
        pass  # handled before, by a run that died before it could say so
"""

# A SCAN: every pending key, in an order that changes from run to run (a
# salted hash), ignoring `last` (a SCAN cursor is no key); handling one deletes it.
SCAN_MODULE = """
import hashlib, os, time

TODO = os.environ["TM_TODO"]
SALT = os.urandom(8)

def get_jobs(last=None, **kwargs):
    names = os.listdir(TODO)
    yield from sorted(names, key=lambda n: hashlib.blake2b(n.encode(), key=SALT).digest())

def handle_job(name):
    time.sleep(float(os.environ.get("TM_SLEEP", "0")))
    try:
        os.unlink(os.path.join(TODO, name))
    except FileNotFoundError:
        pass
"""


def make_files(folder: Path, names: range, prefix: str = "f") -> None:
    folder.mkdir(exist_ok=True)
    for i in names:
        (folder / f"{prefix}{i:06d}").write_bytes(b"")


def interrupted_then_resumed(procs, tmp_path: Path, module_source: str, n: int, add_before_resume: int = 0) -> str:
    """Run tm-run until a checkpoint names some finished jobs, SIGKILL it all, run the same command again.

    Returns the second run's output; the caller checks what is left.
    """
    todo = tmp_path / "todo"
    make_files(todo, range(n))
    module = write_module(tmp_path, "migrate", module_source)
    state = tmp_path / "run.state"
    env = {"TM_TODO": str(todo), "TM_SLEEP": "0.05"}
    argv = tm("run", module, 2, "--concurrency", 20, "--state-file", state, "--no-progress")

    def progress() -> int:
        try:
            return json.loads(state.read_text())["finished"]
        except (OSError, ValueError, KeyError):
            return 0

    first = procs.start(argv, env=env)
    # Killed with jobs resolved after the anchor (finished out of order): the case a position-skip gets wrong.
    wait_for(lambda: progress() >= n // 5, 60, what="a checkpoint with a fifth of the jobs finished")
    procs.kill(first)
    first.communicate(timeout=30)
    left = len(list(todo.iterdir()))
    assert 0 < left < n, left
    make_files(todo, range(add_before_resume), prefix="new")

    second = procs.run(argv, timeout=120, env=env)
    assert second.returncode == 0, second.stderr[-3000:]
    return second.stderr


@pytest.mark.timeout(240)
def test_a_folder_of_pending_files_killed_and_resumed_leaves_no_file(procs, tmp_path):
    interrupted_then_resumed(procs, tmp_path, FOLDER_MODULE, 3000)
    left = sorted(p.name for p in (tmp_path / "todo").iterdir())
    assert left == [], f"{len(left)} files never handled, e.g. {left[:5]}"


@pytest.mark.timeout(240)
def test_a_scan_in_a_new_order_with_new_keys_killed_and_resumed_leaves_no_key(procs, tmp_path):
    log = interrupted_then_resumed(procs, tmp_path, SCAN_MODULE, 3000, add_before_resume=200)
    left = sorted(p.name for p in (tmp_path / "todo").iterdir())
    assert left == [], f"{len(left)} keys never handled, e.g. {left[:5]}"
    assert log.count("yields another sequence than the run before it") == 1, log[-3000:]
