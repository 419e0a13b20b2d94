"""--wait-for-master: slaves that come up before their master, or while it restarts, as on a cluster engine.

Real processes over loopback TCP.  A slave whose --timeout x --retries is far
shorter than the master's absence keeps trying as long as --wait-for-master
says, joins when the master comes, and exits 0 when the run is over.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import handled, tcp_address, tm, wait_for


def start(procs, argv: list[str], log: Path, env: dict) -> subprocess.Popen:
    with open(log, "w") as f:
        return procs.start(argv, env=env, stdout=f, stderr=f)


def exit_code(proc: subprocess.Popen, log: Path, timeout: float) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running after {timeout}s:\n{log.read_text()[-3000:]}") from None


def tries(log: Path) -> int:
    """How many tries without an answer the slave logged: the first says it waits, the others (debug) retry."""
    text = log.read_text()
    return text.count("(--wait-for-master)") + text.count("); retrying")


@pytest.mark.timeout(90)
def test_a_slave_started_long_before_its_master_waits_joins_and_exits_0(procs, tmp_path, recording):
    module, record, env = recording
    address = tcp_address()
    slave_log = tmp_path / "slave.log"
    slave = start(
        procs,
        tm("slave", module, "--address", address, "--timeout", 300, "--retries", 1, "--wait-for-master", 60)
        + ["--no-progress", "--log-level", "debug"],
        slave_log,
        env,
    )
    # Well past --timeout x --retries (0.3 s), and still trying: three tries without an answer.
    wait_for(lambda: tries(slave_log) >= 3, 30, what="three tries without a master")
    assert slave.poll() is None, slave_log.read_text()
    assert "waiting for it up to 60s (--wait-for-master)" in slave_log.read_text()
    master_log = tmp_path / "master.log"
    master = start(
        procs,
        # --linger 0.5: the waiting slave joins and runs the jobs, so it is told to quit on its request;
        # the default linger would only hold this short run's master 3 s from its start.
        tm("master", module, "n=300", "--address", address, "--state-file", tmp_path / "run.state", "--no-progress",
           "--linger", 0.5),
        master_log,
        env,
    )
    assert exit_code(master, master_log, 60) == 0, master_log.read_text()
    assert exit_code(slave, slave_log, 30) == 0, slave_log.read_text()
    assert sorted(set(handled(record))) == list(range(300))
    assert "300 finished, 0 failed" in master_log.read_text()


@pytest.mark.timeout(120)
def test_tm_spawn_slaves_ride_out_a_master_restart_set_from_the_environment(procs, tmp_path, recording):
    """TASKMASTER_WAIT_FOR_MASTER reaches tm-spawn's slaves; the master is killed, gone a while, started again."""
    module, record, env = recording
    address = tcp_address()
    state = tmp_path / "run.state"
    env = {**env, "TM_DELAY": "0.01", "TASKMASTER_WAIT_FOR_MASTER": "0", "TASKMASTER_ADDRESS": address}
    master_argv = tm("master", module, "n=3000", "--state-file", state, "--no-progress", "--lease-timeout", 3)
    first_log = tmp_path / "master1.log"
    master = start(procs, master_argv, first_log, env)
    spawn_log = tmp_path / "spawn.log"
    spawn = start(procs, tm("spawn", module, 2, "--timeout", 300, "--retries", 1, "--no-progress"), spawn_log, env)
    wait_for(lambda: state.exists() and len(handled(record)) >= 500, 60, what="a checkpoint and 500 jobs")
    procs.kill(master, signal.SIGKILL)
    master.wait(timeout=10)
    gone = time.monotonic()
    wait_for(lambda: "waiting for it for ever (--wait-for-master)" in spawn_log.read_text(), 30, what="slaves waiting")
    # Gone for longer than the slaves' own --timeout x --retries.
    wait_for(lambda: time.monotonic() - gone > 1.5, 5, what="the master's absence")
    assert spawn.poll() is None, spawn_log.read_text()
    second_log = tmp_path / "master2.log"
    master = start(procs, master_argv, second_log, env)
    assert exit_code(master, second_log, 90) == 0, second_log.read_text()
    assert "resuming at job" in second_log.read_text()
    assert exit_code(spawn, spawn_log, 30) == 0, spawn_log.read_text()
    assert set(handled(record)) == set(range(3000))


@pytest.mark.timeout(60)
def test_a_slave_gives_up_once_its_wait_is_over(procs, tmp_path, recording):
    module, _, env = recording
    address = tcp_address()
    log = tmp_path / "slave.log"
    started = time.monotonic()
    argv = tm("slave", module, "--address", address, "--timeout", 300, "--retries", 1, "--wait-for-master", 2)
    slave = start(procs, argv + ["--no-progress"], log, env)
    assert exit_code(slave, log, 30) == 1, log.read_text()
    assert time.monotonic() - started >= 2
    text = log.read_text()
    assert f"tm-slave: error: no master answered at {address} within --wait-for-master 2s" in text, text
    assert "Traceback" not in text


@pytest.mark.timeout(120)
def test_a_master_stopped_by_sigterm_mid_run_is_waited_for_not_taken_for_the_end(procs, tmp_path, recording):
    """A pod deleted, a job cancelled: the master saves its state and says quit, "the master is stopping".

    A slave told to wait for its master waits for the next one and finishes
    the run with it, instead of exiting 0 as if the run were over.
    """
    module, record, env = recording
    address = tcp_address()
    state = tmp_path / "run.state"
    env = {**env, "TM_DELAY": "0.01"}
    # --linger 0.5: the one slave runs jobs for both masters (it joined each before its end) and is
    # told "stopping"/"quit" on its requests; the default linger only held each master 3 s from its start.
    master_argv = tm("master", module, "n=2000", "--address", address, "--state-file", state, "--no-progress",
                     "--linger", 0.5)
    first_log = tmp_path / "master1.log"
    master = start(procs, master_argv, first_log, env)
    slave_log = tmp_path / "slave.log"
    slave_argv = tm("slave", module, "--address", address, "--wait-for-master", 60, "--no-progress")
    slave = start(procs, slave_argv + ["--timeout", "300", "--retries", "1"], slave_log, env)
    wait_for(lambda: len(handled(record)) >= 300, 60, what="300 jobs handled")
    master.send_signal(signal.SIGTERM)
    assert exit_code(master, first_log, 30) == 143, first_log.read_text()
    wait_for(lambda: "the master is stopping; waiting for the next one" in slave_log.read_text(), 10, what="the wait")
    assert slave.poll() is None, slave_log.read_text()
    second_log = tmp_path / "master2.log"
    master = start(procs, master_argv, second_log, env)
    assert exit_code(master, second_log, 90) == 0, second_log.read_text()
    assert "resuming at job" in second_log.read_text()
    assert exit_code(slave, slave_log, 30) == 0, slave_log.read_text()
    assert set(handled(record)) == set(range(2000))
