"""tm-run forks its master and slaves from itself (taskmaster.forked): what that must not change.

Each child imports the user's module itself, after the fork, so that what
the module makes at import (a connection, a thread) is its own; children are
patched by gevent unless --no-monkey-patch says otherwise; they show as
tm-master and tm-slave; a bad target is still one line; and they never
outlive tm-run.
"""

from __future__ import annotations

import json
import signal

import pytest
from conftest import descendants, error_line, pid_gone, start_logged, tail, text, tm, wait_for, write_module

# Each process that imports the module appends its pid once; each job records
# which process ran it and whether socket was patched there.
PROBE = """
import os, socket

import gevent.monkey

LOG = os.environ["TM_PROBE"]

def _append(record):
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(record) + "\\n").encode())
    finally:
        os.close(fd)

import json
_append({"imported_by": os.getpid()})

def get_jobs(last=0, n="20", **kwargs):
    return range(int(last), int(n))

def handle_job(i):
    gate = os.environ.get("TM_HOLD")
    while gate and not os.path.exists(gate):
        __import__("time").sleep(0.02)
    _append({"job": i, "pid": os.getpid(), "patched": gevent.monkey.is_module_patched("socket")})
"""


def probe_records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.timeout(90)
@pytest.mark.parametrize("patch", [True, False], ids=["patched", "no-monkey-patch"])
def test_each_child_imports_the_module_itself_after_the_fork(procs, tmp_path, patch):
    module = write_module(tmp_path, "probe", PROBE)
    log = tmp_path / "probe.jsonl"
    argv = tm("run", module, 2, "n=40", "--no-progress", *([] if patch else ["--no-monkey-patch"]))
    result = procs.run(argv, env={"TM_PROBE": str(log)}, timeout=60)
    assert result.returncode == 0, result.stderr
    records = probe_records(log)
    importers = [r["imported_by"] for r in records if "imported_by" in r]
    jobs = [r for r in records if "job" in r]
    assert sorted(r["job"] for r in jobs) == list(range(40)), result.stderr
    # tm-run (its check of the targets), the master and both slaves: four imports by four processes.
    assert len(importers) == len(set(importers)) == 4, (importers, result.stderr)
    assert {r["pid"] for r in jobs} <= set(importers)
    assert {r["patched"] for r in jobs} == {patch}


@pytest.mark.timeout(90)
def test_children_are_named_and_die_with_tm_run(procs, tmp_path):
    module = write_module(tmp_path, "probe", PROBE)
    log, run_log = tmp_path / "probe.jsonl", tmp_path / "run.log"
    env = {"TM_PROBE": str(log), "TM_HOLD": str(tmp_path / "never")}
    # --grace 1: the master, told to stop (SIGTERM) when tm-run dies, waits that long for the held jobs,
    # not the default 10 s.
    argv = tm("run", module, 2, "--no-progress", "--grace", "1")
    run = start_logged(procs, argv, run_log, env)
    wait_for(lambda: text(run_log).count(" joined ") == 2, 30, what=f"both slaves joined:\n{tail(run_log)}")
    children = descendants(run.pid)
    names = sorted(open(f"/proc/{pid}/comm").read().strip() for pid in children)
    assert names == ["tm-master", "tm-slave", "tm-slave"], names
    run.send_signal(signal.SIGKILL)  # no chance to pass anything on: the children must notice alone
    run.wait(10)
    wait_for(lambda: all(pid_gone(pid) for pid in children), 30, what=f"the children to exit:\n{tail(run_log)}")


@pytest.mark.timeout(60)
def test_a_bad_target_is_one_line(procs, tmp_path):
    module = write_module(tmp_path, "nohandler", "def get_jobs(last=0):\n    return range(3)\n")
    result = procs.run(tm("run", module, 3, "--no-progress"), timeout=30)
    error_line(result, "tm-run", "handle_job")
