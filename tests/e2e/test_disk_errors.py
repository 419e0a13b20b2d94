"""Write errors in the middle of a run: the state file or the failures file
cannot be written any more (here: its directory is renamed away, a real
filesystem error, as a full disk or a lost mount would give).

Nothing may be lost and nothing may crash: the master says what is wrong in
one line, the files keep their last good contents, and the same command
resumes once the cause is fixed.  Jobs from N/2 on wait behind a gate file,
so each step happens at a known point of the run, whatever the machine's
speed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import handled, start_logged, tail, tcp_address, text, tm, wait_exit, wait_for, wait_listening

N = 2000


def error_lines(log: Path) -> list[str]:
    return [line for line in text(log).splitlines() if line.startswith("tm-master: error: ")]


def start_run(procs, tmp_path: Path, module: Path, env: dict, *extra: str):
    """A master (not yet a slave) for N jobs; (argv, master, log)."""
    argv = tm("master", module, f"n={N}", "--address", tcp_address(), "--no-progress", "--checkpoint-every", "0.1")
    argv += list(extra)
    mlog = tmp_path / "master.log"
    master = start_logged(procs, argv, mlog, env)
    wait_listening(master, mlog)
    return argv, master, mlog


def slave_argv(module: Path, master_argv: list[str]) -> list[str]:
    address = master_argv[master_argv.index("--address") + 1]
    return tm("slave", module, "--address", address, "--no-progress", "--timeout", "500", "--retries", "40")

def gated_run_with_state_dir(procs, tmp_path: Path, module: Path, env: dict):
    """A run whose second half waits for `gate`, its state file alone in a directory the test can rename away.

    (gate, env, state file, where the directory goes away to, start_run's result)
    """
    gate = tmp_path / "gate"
    env = {**env, "TM_GATE": str(gate), "TM_GATE_AT": str(N // 2)}
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    state = state_dir / "run.state"
    run = start_run(procs, tmp_path, module, env, "--state-file", str(state))
    return gate, env, state, tmp_path / "state.away", run



@pytest.mark.timeout(120)
def test_state_file_unwritable_for_a_while_then_written_again(procs, tmp_path, recording):
    """The run goes on while the state file cannot be written, and saves again once it can."""
    module, record, env = recording
    gate, env, state, away, (argv, master, mlog) = gated_run_with_state_dir(procs, tmp_path, module, env)
    state_dir = state.parent
    wait_for(state.exists, 30, what="the first checkpoint (the jobs pulled, none done)")
    first = json.loads(state.read_text())
    assert first["finished"] == 0

    state_dir.rename(away)  # from now on every save fails
    start_logged(procs, slave_argv(module, argv), tmp_path / "slave.log", env)
    wait_for(lambda: len(handled(record)) >= N // 2, 60, what="the first half of the jobs")
    wait_for(lambda: "cannot write the state file" in text(mlog), 30, what="the master to report the failed save")
    assert master.poll() is None, tail(mlog)
    assert text(mlog).count("cannot write the state file") == 1, "the error should be logged once, not every save"
    assert json.loads((away / "run.state").read_text()) == first, "the last good state was changed"

    away.rename(state_dir)
    wait_for(lambda: "is written again" in text(mlog), 30, what="the master to save again")
    assert json.loads(state.read_text())["finished"] >= N // 2 - 100  # what was acknowledged by then

    gate.touch()
    assert wait_exit(master, 60, mlog) == 0, tail(mlog)
    doc = json.loads(state.read_text())
    assert doc["complete"] and doc["finished"] == N
    assert set(handled(record)) == set(range(N))
    assert "Traceback" not in text(mlog)
    assert not list(state_dir.glob("*.tmp-*")), "a temporary file was left behind"


@pytest.mark.timeout(120)
def test_state_file_unwritable_at_the_end_exits_1_and_the_same_command_resumes(procs, tmp_path, recording):
    """Every job done but the final save fails: exit 1 with one error line; the old state is kept and resumed."""
    module, record, env = recording
    gate, env, state, away, (argv, master, mlog) = gated_run_with_state_dir(procs, tmp_path, module, env)
    state_dir = state.parent
    start_logged(procs, slave_argv(module, argv), tmp_path / "slave.log", env)
    wait_for(lambda: len(handled(record)) >= N // 2, 60, what="the first half of the jobs")
    wait_for(lambda: json.loads(state.read_text())["finished"] >= N // 2, 30, what="a checkpoint of the first half")

    state_dir.rename(away)
    gate.touch()
    assert wait_exit(master, 60, mlog) == 1, tail(mlog)
    assert set(handled(record)) == set(range(N))
    log = text(mlog)
    assert "Traceback" not in log, log[-3000:]
    [line] = error_lines(mlog)
    assert f"cannot write the state file {state}: No such file or directory" in line, line
    assert "run the same command to resume" in line, line

    away.rename(state_dir)
    kept = json.loads(state.read_text())
    assert not kept["complete"] and N // 2 <= kept["finished"] < N
    record.unlink()
    mlog2 = tmp_path / "master2.log"
    master = start_logged(procs, argv, mlog2, env)
    start_logged(procs, slave_argv(module, argv), tmp_path / "slave2.log", env)
    assert wait_exit(master, 60, mlog2) == 0, tail(mlog2)
    assert f"resuming at job {kept['position']}" in text(mlog2)
    again = set(handled(record))
    assert again and min(again) >= N // 2 and again | set(range(N // 2)) == set(range(N))
    assert json.loads(state.read_text())["complete"]


@pytest.mark.timeout(120)
def test_failures_file_unwritable_stops_the_run_and_the_job_is_not_lost(procs, tmp_path, recording):
    """A failed job that cannot be recorded is not counted as resolved: the master stops, the next run redoes it."""
    module, record, env = recording
    env = {**env, "TM_FAIL_EVERY": "700", "TM_DELAY": "0.001"}
    failing = {i for i in range(N) if i % 700 == 0}
    fail_dir, away = tmp_path / "failures", tmp_path / "failures.away"
    fail_dir.mkdir()
    failures = fail_dir / "run.failures.jsonl"
    extra = ("--state-file", str(tmp_path / "run.state"), "--failures-file", str(failures), "--max-retries", "0")
    argv, master, mlog = start_run(procs, tmp_path, module, env, *extra)

    fail_dir.rename(away)  # before any job ran: job 0 fails and cannot be recorded
    slave = start_logged(procs, slave_argv(module, argv), tmp_path / "slave.log", env)
    assert wait_exit(master, 60, mlog) == 1, tail(mlog)
    log = text(mlog)
    assert "Traceback" not in log, log[-3000:]
    [line] = error_lines(mlog)
    assert f"cannot record a failed job in {failures}: No such file or directory" in line, line
    assert "run the same command to resume" in line, line
    assert not list(away.iterdir()), "nothing should have been written"
    state = json.loads((tmp_path / "run.state").read_text())
    assert not state["complete"] and state["position"] == 0 and state["failed"] == 0
    wait_exit(slave, 30, tmp_path / "slave.log")

    away.rename(fail_dir)
    mlog2 = tmp_path / "master2.log"
    master = start_logged(procs, argv, mlog2, env)
    start_logged(procs, slave_argv(module, argv), tmp_path / "slave2.log", env)
    assert wait_exit(master, 60, mlog2) == 1, tail(mlog2)  # 1: some jobs failed, as they should
    recorded = {json.loads(line)["position"] for line in failures.read_text().splitlines()}
    assert recorded == failing
    assert set(handled(record)) == set(range(N)) - failing
    assert json.loads((tmp_path / "run.state").read_text())["complete"]
