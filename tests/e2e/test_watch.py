"""tm-status --watch against real masters: redrawn until the run ends, then the run's outcome as exit code."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from conftest import handled, start_logged, tail, tcp_address, tm, wait_exit, wait_for, wait_listening
from test_terminal import Terminal


def start_run(procs, tmp_path, module, env, n: int, *master_flags: str) -> tuple[str, subprocess.Popen]:
    address = tcp_address()
    mlog = tmp_path / "master.log"
    argv = tm("master", module, f"n={n}", "--address", address, "--no-progress", *master_flags)
    master = start_logged(procs, argv, mlog, env)
    wait_listening(master, mlog)
    slave = tm("slave", module, "--address", address, "--no-progress", "--concurrency", "2")
    start_logged(procs, slave, tmp_path / "slave.log", env)
    return address, master


def watch(procs, address: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return procs.run(tm("status", "--address", address, "--timeout", "1000", "--watch", *extra), env=env, timeout=120)


@pytest.mark.timeout(120)
def test_watch_prints_blocks_until_the_run_is_over_then_exits_0(procs, tmp_path, recording):
    module, record, env = recording
    address, master = start_run(procs, tmp_path, module, {**env, "TM_DELAY": "0.01"}, 300)
    result = watch(procs, address, "0.2")
    assert result.returncode == 0, result.stderr
    blocks = [b for b in result.stdout.split("\n\n") if b.strip()]
    assert len(blocks) >= 2, result.stdout  # asked again and again while the run went on
    for block in blocks:
        assert block.startswith(f"{address}, every 0.2s: ") and "\nfinished    " in block
    assert "\x1b" not in result.stdout  # not a terminal: nothing but text
    assert result.stderr.strip() == "tm-status: the run is over: 300 finished, 0 failed"
    assert wait_exit(master, 30, tmp_path / "master.log") == 0
    assert sorted(handled(record)) == list(range(300))


@pytest.mark.timeout(120)
def test_watch_exits_1_when_jobs_failed_for_good(procs, tmp_path, recording):
    module, record, env = recording
    env = {**env, "TM_DELAY": "0.01", "TM_FAIL_EVERY": "50"}
    address, master = start_run(procs, tmp_path, module, env, 200, "--max-retries", "0")
    result = watch(procs, address, "0.3", "--json")
    assert result.returncode == 1, result.stderr
    snapshots = [json.loads(line) for line in result.stdout.splitlines()]  # one JSON object a line
    assert snapshots and all(s["target"].endswith("recjobs.py:get_jobs") for s in snapshots)
    assert "the run is over: 196 finished, 4 failed; failed jobs are in " in result.stderr
    assert wait_exit(master, 30, tmp_path / "master.log") == 1


@pytest.mark.timeout(120)
def test_a_master_gone_before_we_hear_the_end_is_read_from_its_state_file(procs, tmp_path, recording):
    """--linger 0: the master leaves as soon as its run is over; the next ask finds nobody, the state file says."""
    module, record, env = recording
    gate = tmp_path / "gate"  # the last jobs wait for it: the run cannot end before the watcher's first ask
    env = {**env, "TM_DELAY": "0.005", "TM_GATE": str(gate), "TM_GATE_AT": "190"}
    address, master = start_run(procs, tmp_path, module, env, 200, "--linger", "0")
    watcher = procs.start(tm("status", "--address", address, "--timeout", "1000", "--watch", "5"))
    first_block = [watcher.stdout.readline() for _ in range(12)]  # the time line and the status above the slaves
    asked = time.monotonic()  # the second ask comes 5 s after the first: not before asked + 4
    assert any(line.startswith("state       running") or "draining" in line for line in first_block), first_block
    gate.touch()
    assert wait_exit(master, 30, tmp_path / "master.log") == 0
    gone = time.monotonic()
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    assert err.strip() == "tm-status: the run is over: 200 finished, 0 failed"
    if gone - asked < 4:  # gone before the second ask: the state file told
        assert "\nstate       " not in out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_a_master_that_stops_before_the_run_is_over_exits_3(procs, tmp_path, recording, how):
    module, record, env = recording
    address, master = start_run(procs, tmp_path, module, {**env, "TM_DELAY": "0.05"}, 100000)
    watcher = procs.start(tm("status", "--address", address, "--timeout", "500", "--watch", "0.2"))
    wait_for(lambda: len(handled(record)) >= 20 and list(tmp_path.glob("*.state")), 60, what="a checkpoint")
    master.send_signal(how)
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 3, err
    assert "before its run was over" in err or "stopped before the run was over" in err, err
    assert "run its command again to resume" in err
    assert "finished" in out


def test_watch_without_a_master_exits_3(procs):
    result = procs.run(tm("status", "--address", tcp_address(), "--timeout", "300", "--watch"), timeout=30)
    assert result.returncode == 3
    assert "no master answered" in result.stderr and result.stdout == ""


@pytest.mark.timeout(120)
def test_on_a_terminal_the_status_is_redrawn_in_place(procs, tmp_path, recording):
    module, record, env = recording
    address, master = start_run(procs, tmp_path, module, {**env, "TM_DELAY": "0.01"}, 300)
    terminal = Terminal()
    argv = tm("status", "--address", address, "--timeout", "1000", "--watch", "0.2")
    watcher = terminal.start(procs, argv, {"TERM": "xterm-256color"})
    terminal.close_writer()
    assert watcher.wait(timeout=60) == 0
    out = terminal.text()
    redraws = out.count("\x1b[J")  # clear to the end of the screen, after going back up
    assert redraws >= 2 and "F\x1b[J" in out, repr(out[-1500:])
    assert out.count("target      ") == redraws  # each block drawn over the last
    assert "the run is over: 300 finished, 0 failed" in out
    assert wait_exit(master, 30, tmp_path / "master.log") == 0, tail(tmp_path / "master.log")


@pytest.mark.timeout(120)
def test_term_dumb_gets_plain_blocks(procs, tmp_path, recording):
    module, record, env = recording
    address, master = start_run(procs, tmp_path, module, {**env, "TM_DELAY": "0.01"}, 300)
    terminal = Terminal()
    argv = tm("status", "--address", address, "--timeout", "1000", "--watch", "0.2")
    watcher = terminal.start(procs, argv, {"TERM": "dumb"})
    terminal.close_writer()
    assert watcher.wait(timeout=60) == 0
    out = terminal.text()
    assert "\x1b" not in out and out.count("target      ") >= 2
