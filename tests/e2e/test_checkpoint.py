"""The state file end to end: resuming after SIGKILL and SIGINT, finished runs,
--reset, and state files that belong to another target or other arguments."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
from conftest import (
    ProgressWatch,
    duplicates,
    error_line,
    handled,
    snapshot,
    state_files,
    tcp_address,
    tm,
    wait_for,
    write_module,
)


def master_argv(module, n: int, address: str, *extra: str) -> list[str]:
    return tm("master", module, f"n={n}", "--address", address, "--no-progress", *extra)


def spawn_argv(module, address: str, *extra: str) -> list[str]:
    return tm("spawn", module, 2, "--address", address, "--no-progress", *extra)


def resumed_at(err: str) -> int:
    match = re.search(r"resuming at job (\d+)", err)
    assert match, f"the restarted master did not resume from the state file:\n{err}"
    return int(match.group(1))


def complete_run(procs, module, n: int, env: dict, *kwargs: str):
    """One whole run of the recording module (a master and one slave); the master's CompletedProcess."""
    address = tcp_address()
    # --linger 0: the slave runs every job, so it joined before the end and hears "quit"; the default
    # linger (3 s from the master's start) would only be waited out.
    argv = tm("master", module, f"n={n}", *kwargs, "--address", address, "--no-progress", "--linger", "0")
    master = procs.start(argv, env=env)
    slave = procs.start(tm("slave", module, "--address", address, "--no-progress"), env=env)
    out, err = master.communicate(timeout=60)
    slave.communicate(timeout=30)
    assert master.returncode == 0, err
    assert slave.returncode == 0
    return subprocess.CompletedProcess(argv, master.returncode, out, err)


# ------------------------------------------------------------ SIGKILL


@pytest.mark.timeout(120)
def test_sigkill_master_mid_run_then_same_command_finishes(procs, tmp_path, recording):
    """SIGKILL the master; the same command resumes from the state file and the slaves carry on.

    What runs twice is bounded: the jobs the master held (at most --size) plus
    those finished since its last checkpoint (written every second); the bound
    below allows two seconds' worth.
    """
    # 2 slaves x 5 greenlets x a 2 ms sleep per job: at most 5000 jobs/s, so the
    # kill below always comes well before the end of the run.
    n, size = 16000, 500
    module, record, env = recording
    env = {**env, "TM_DELAY": "0.002"}
    address = tcp_address()
    argv = master_argv(module, n, address, "--size", str(size))
    master = procs.start(argv, env=env)
    spawn = procs.start(spawn_argv(module, address, "--concurrency", "5"), env=env)

    watch = ProgressWatch(record)

    def allowed_repeats() -> int:
        return size + 2 * watch.handled_in_last(1.0)

    # Kill once starting over would repeat more jobs than allowed (by --size at
    # least), so the bound really tells a resumed run from one started afresh.
    def far_enough() -> bool:
        count = watch.count()
        return watch.span() >= 1.5 and count >= allowed_repeats() + size

    wait_for(far_enough, 60, what="progress before the kill")
    master.kill()
    master.wait(timeout=10)
    bound = allowed_repeats()
    handled_before = watch.count()
    assert handled_before < n, "the run finished before the kill; make it longer"
    assert state_files(tmp_path), "no state file after seconds of progress"

    restarted = procs.start(argv, env=env)
    _, err = restarted.communicate(timeout=90)
    assert restarted.returncode == 0, err
    position = resumed_at(err)
    assert position > 0
    _, s_err = spawn.communicate(timeout=30)
    assert spawn.returncode == 0, s_err  # the slaves joined the restarted master and were told to quit

    jobs = handled(record)
    assert set(jobs) == set(range(n)), f"{n - len(set(jobs))} jobs never handled"
    assert duplicates(jobs) <= bound, (
        f"{duplicates(jobs)} jobs ran twice; at most {bound} expected ({handled_before} handled before the kill, "
        f"resumed at job {position})"
    )
    assert json.loads(state_files(tmp_path)[0].read_text())["complete"] is True


# ------------------------------------------------------------- SIGINT


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_interrupted_master_exits_and_same_command_resumes(procs, tmp_path, recording, signum, code):
    n = 20000
    module, record, env = recording
    env = {**env, "TM_DELAY": "0.002"}
    address = tcp_address()
    argv = master_argv(module, n, address, "--size", "1000")
    master = procs.start(argv, env=env)
    spawn = procs.start(spawn_argv(module, address), env=env)
    wait_for(lambda: len(handled(record)) >= 2000, 60, what="the slaves to be working")

    master.send_signal(signum)
    _, err = master.communicate(timeout=30)
    assert master.returncode == code, err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if line.startswith("tm-master: ")]
    assert "interrupted" in line and "run the same command to resume" in line, line
    _, s_err = spawn.communicate(timeout=30)  # the master told its slaves to go
    assert spawn.returncode == 0, s_err
    before = handled(record)
    assert len(set(before)) < n, "the run finished before the interrupt; make it longer"
    assert duplicates(before) == 0

    restarted = procs.start(argv, env=env)
    spawn = procs.start(spawn_argv(module, address), env=env)
    _, err = restarted.communicate(timeout=90)
    assert restarted.returncode == 0, err
    assert resumed_at(err) > 0
    spawn.communicate(timeout=30)
    jobs = handled(record)
    assert set(jobs) == set(range(n))
    # the interrupt waited for the jobs in flight: nothing needs to run twice
    assert duplicates(jobs) == 0, f"{duplicates(jobs)} jobs ran twice after a graceful interrupt"


# ------------------------------------------------------- finished runs


@pytest.mark.timeout(90)
def test_finished_run_run_again_says_so_and_reset_runs_it_again(procs, tmp_path, recording):
    n = 1000
    module, record, env = recording
    address = tcp_address()
    argv = master_argv(module, n, address, "--linger", "0")  # as complete_run: the slave runs the jobs
    master = procs.start(argv, env=env)
    slave = procs.start(tm("slave", module, "--address", address, "--no-progress"), env=env)
    _, err = master.communicate(timeout=60)
    slave.communicate(timeout=30)
    assert master.returncode == 0, err
    assert sorted(handled(record)) == list(range(n))
    [state] = state_files(tmp_path)
    saved = state.read_bytes()

    again = procs.run(argv, env=env, timeout=30)
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stderr
    assert state.name in again.stderr and "--reset" in again.stderr
    assert "Traceback" not in again.stderr
    assert len(handled(record)) == n, "jobs ran again"
    assert state.read_bytes() == saved

    master = procs.start([*argv, "--reset"], env=env)
    slave = procs.start(tm("slave", module, "--address", address, "--no-progress"), env=env)
    _, err = master.communicate(timeout=60)
    slave.communicate(timeout=30)
    assert master.returncode == 0, err
    assert f"{n} finished, 0 failed" in err
    assert "resuming" not in err
    jobs = handled(record)
    assert sorted(jobs) == sorted(list(range(n)) * 2)
    assert json.loads(state.read_text())["complete"] is True


@pytest.mark.timeout(60)
def test_finished_run_run_again_with_tm_run_is_quick_and_quiet(procs, tmp_path, recording):
    """tm-run on a finished run: the master's message, exit 0, at once, no slave errors."""
    module, record, env = recording
    complete_run(procs, module, 5000, env)
    started = time.monotonic()
    # --timeout 5000 x --retries 3: slaves left waiting for a master that never listens would take 15 s
    again = procs.run(tm("run", module, 2, "n=5000", "--no-progress", "--timeout", "5000"), env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert again.returncode == 0, again.stderr
    assert "this run already finished" in again.stderr
    assert len(handled(record)) == 5000
    assert "error" not in again.stderr, again.stderr
    assert elapsed < 8, f"tm-run took {elapsed:.1f}s to say the run already finished"


# ------------------------------------------------ another target's state


@pytest.mark.timeout(90)
def test_state_file_of_other_arguments_or_target_is_refused(procs, tmp_path, recording):
    module, record, env = recording
    complete_run(procs, module, 300, env)
    [state] = state_files(tmp_path)
    other = write_module(tmp_path, "otherjobs", module.read_text())
    saved = snapshot(tmp_path)

    attempts = [
        (tm("master", module, "n=400", "--state-file", state.name), "n=300"),  # other arguments
        (tm("master", module, "--state-file", state.name), "(none)"),  # no arguments
        (tm("master", other, "n=300", "--state-file", state.name), "recjobs"),  # another module
        (tm("master", f"{module}:handle_job", "n=300", "--state-file", state.name), "get_jobs"),  # other function
    ]
    for argv, fragment in attempts:
        result = procs.run(argv, env=env, timeout=30)
        line = error_line(result, "tm-master", state.name, fragment)
        assert "belongs to" in line, line
        assert snapshot(tmp_path) == saved, f"{argv} changed files"
    assert len(handled(record)) == 300


@pytest.mark.timeout(90)
def test_other_arguments_get_their_own_default_state_file(procs, tmp_path, recording):
    module, record, env = recording
    first = complete_run(procs, module, 200, env)
    assert "already finished" not in first.stderr
    [state_200] = state_files(tmp_path)
    second = complete_run(procs, module, 300, env, "x=1")
    assert "already finished" not in second.stderr
    assert "300 finished" in second.stderr
    states = state_files(tmp_path)
    assert len(states) == 2, states
    [state_300] = [s for s in states if s != state_200]
    assert json.loads(state_300.read_text())["kwargs"] == {"n": "300", "x": "1"}
    assert json.loads(state_200.read_text())["kwargs"] == {"n": "200"}
    # the same key=value arguments in another order are the same run
    third = procs.run(tm("master", module, "x=1", "n=300", "--no-progress"), env=env, timeout=30)
    assert third.returncode == 0 and "already finished" in third.stderr, third.stderr
    assert len(state_files(tmp_path)) == 2
