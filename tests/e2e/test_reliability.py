"""Nothing lost: frozen, killed and interrupted processes, failing and
overrunning handlers, a broken job source, and masters that go away.

Every process is real and talks over a real socket; every wait has a deadline.
Processes write their output to log files (a pipe nobody reads could fill up
and block them).  The job module below is steered by environment variables
and flag files, so one module serves every test.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
from conftest import (
    ProgressWatch,
    descendants,
    duplicates,
    handled,
    pid_gone,
    tcp_address,
    tm,
    wait_for,
    write_module,
)

from taskmaster.slave.core import MAX_JOBS_PER_REPORT

# For a master whose slaves all ran jobs (so joined before the run ended and
# hear "quit" on their requests): the default --linger keeps a short run's
# master up 3 s from its start for slaves that never came, a wait that is not
# what these tests check.
SHORT_LINGER = ("--linger", 0.5)

# What each knob does:
#   TM_RECORD   a line "i" per job that finished (written last, so a job that
#               raised or was cut short leaves none)
#   TM_STARTS   a line "i pid" each time a handler starts a job
#   TM_SLEEP    seconds each (slow) job sleeps - cooperatively, time.sleep is patched
#   TM_SPIN     seconds each (slow) job computes in a loop that never yields
#   TM_SLOW     comma-separated positions that sleep/spin (default: all)
#   TM_BAD      comma-separated positions whose handler raises ValueError...
#   TM_FIXED    ...unless this file exists; then only positions listed in it raise
#   TM_SOURCE_FAIL_AT  get_jobs raises RuntimeError on reaching this position...
#   TM_SOURCE_FIXED    ...unless this file exists
#   TM_GATE     handlers wait until this file exists
JOBS_MODULE = """
import os, time

RECORD = os.environ["TM_RECORD"]


def _append(path, line):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _positions(text):
    return {int(x) for x in text.replace("\\n", ",").split(",") if x.strip()}


def _exists(var):
    path = os.environ.get(var)
    return bool(path) and os.path.exists(path)


def get_jobs(last=0, n="1000", **kwargs):
    fail_at = os.environ.get("TM_SOURCE_FAIL_AT")
    for i in range(int(last), int(n)):
        if fail_at and i == int(fail_at) and not _exists("TM_SOURCE_FIXED"):
            raise RuntimeError(f"the job source broke at {i}")
        yield i


def _broken(i):
    if i not in _positions(os.environ.get("TM_BAD", "")):
        return False
    if _exists("TM_FIXED"):
        with open(os.environ["TM_FIXED"]) as f:
            return i in _positions(f.read())
    return True


def handle_job(i):
    while os.environ.get("TM_GATE") and not _exists("TM_GATE"):
        time.sleep(0.02)
    if os.environ.get("TM_STARTS"):
        _append(os.environ["TM_STARTS"], f"{i} {os.getpid()}\\n")
    slow = os.environ.get("TM_SLOW")
    if slow is None or i in _positions(slow):
        if os.environ.get("TM_SLEEP"):
            time.sleep(float(os.environ["TM_SLEEP"]))
        if os.environ.get("TM_SPIN"):
            end = time.monotonic() + float(os.environ["TM_SPIN"])
            while time.monotonic() < end:
                pass
    if _broken(i):
        raise ValueError(f"job {i} is broken")
    _append(RECORD, f"{i}\\n")
"""


class Run:
    """One test's module, files and processes, with logs instead of pipes."""

    def __init__(self, procs, tmp_path: Path, n: int, **env: object) -> None:
        self.procs = procs
        self.dir = tmp_path
        self.n = n
        self.module = write_module(tmp_path, "reljobs", JOBS_MODULE)
        self.record = tmp_path / "handled.txt"
        self.starts = tmp_path / "starts.txt"
        self.state = tmp_path / "run.state"
        self.failures = tmp_path / "run.failures.jsonl"
        self.address = tcp_address()
        self.env = {"TM_RECORD": str(self.record), "TM_STARTS": str(self.starts)}
        self.env.update({k: str(v) for k, v in env.items()})
        self.logs: dict[int, Path] = {}
        self.count = 0

    def master_argv(self, *extra: object) -> list[str]:
        return tm(
            "master",
            self.module,
            f"n={self.n}",
            "--address",
            self.address,
            "--state-file",
            self.state,
            "--failures-file",
            self.failures,
            "--no-progress",
            *extra,
        )

    def slave_argv(self, *extra: object) -> list[str]:
        return tm("slave", self.module, "--address", self.address, "--no-progress", *extra)

    def start(self, argv: list[str], name: str) -> subprocess.Popen:
        self.count += 1
        log = self.dir / f"{self.count:02d}-{name}.log"
        with open(log, "w") as f:
            proc = self.procs.start(argv, env=self.env, stdout=f, stderr=f)
        self.logs[proc.pid] = log
        return proc

    def master(self, *extra: object) -> subprocess.Popen:
        return self.start(self.master_argv(*extra), "master")

    def slave(self, *extra: object) -> subprocess.Popen:
        return self.start(self.slave_argv(*extra), "slave")

    def log(self, proc: subprocess.Popen) -> str:
        return self.logs[proc.pid].read_text(errors="replace")

    def wait(self, proc: subprocess.Popen, timeout: float) -> int:
        """The exit code; fail (showing the log) if it takes longer than `timeout`."""
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{proc.args[3]} still running after {timeout}s:\n{self.log(proc)[-3000:]}") from None

    def wait_log(self, proc: subprocess.Popen, text: str, timeout: float) -> str:
        return wait_for(lambda: text in self.log(proc) and self.log(proc), timeout, what=f"{text!r} in the log")

    def handled(self) -> list[int]:
        return handled(self.record)

    def started_jobs(self) -> list[tuple[int, int]]:
        if not self.starts.exists():
            return []
        lines = self.starts.read_text().split("\n")[:-1]  # complete lines only
        return [(int(i), int(pid)) for i, pid in (line.split() for line in lines)]

    def wait_handled(self, k: int, timeout: float = 30) -> None:
        wait_for(lambda: len(self.handled()) >= k, timeout, what=f"{k} jobs handled")

    def assert_all_handled(self, max_repeats: int = 0) -> None:
        jobs = self.handled()
        missing = sorted(set(range(self.n)) - set(jobs))
        assert not missing, f"{len(missing)} jobs never handled, e.g. {missing[:20]}"
        assert set(jobs) <= set(range(self.n))
        assert duplicates(jobs) <= max_repeats, f"{duplicates(jobs)} jobs handled more than once"

    def failure_entries(self) -> list[dict]:
        if not self.failures.exists():
            return []
        return [json.loads(line) for line in self.failures.read_text().splitlines() if line.strip()]

    def state_doc(self) -> dict:
        return json.loads(self.state.read_text())


def summary_line(log: str) -> str:
    lines = [line for line in log.splitlines() if line.startswith("tm-master: ") and "finished" in line]
    assert lines, f"no summary line from the master:\n{log[-3000:]}"
    return lines[-1]


def taken_back(log: str, pid: int) -> int:
    """How many jobs the master took back from the slave with this pid when its lease ran out."""
    match = re.search(rf"pid {pid}\) silent for \d+s: (\d+) of its jobs go to other slaves", log)
    assert match, f"the master did not take back the jobs of slave pid {pid}:\n{log[-3000:]}"
    return int(match.group(1))


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ------------------------------------------------------- slaves that die


@pytest.mark.timeout(60)
def test_frozen_slave_loses_its_jobs_to_the_other(procs, tmp_path):
    """SIGSTOP a slave mid-run: after --lease-timeout its jobs go to the other slave."""
    run = Run(procs, tmp_path, 3000, TM_SLEEP=0.01)
    master = run.master("--lease-timeout", 2)
    frozen = run.slave()
    run.wait_handled(100)
    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        other = run.slave()
        assert run.wait(master, 60) == 0, run.log(master)
        assert taken_back(run.log(master), frozen.pid) > 0
        run.assert_all_handled(max_repeats=50)  # at most what it had finished but not acknowledged
        assert run.wait(other, 15) == 0, run.log(other)
    finally:
        os.kill(frozen.pid, signal.SIGCONT)


@pytest.mark.timeout(60)
def test_killed_slave_loses_nothing(procs, tmp_path):
    """SIGKILL one of two slaves mid-run: the other finishes the run, every job handled."""
    run = Run(procs, tmp_path, 4000, TM_SLEEP=0.01)
    master = run.master("--lease-timeout", 2)
    victim, survivor = run.slave(), run.slave()
    run.wait_handled(500)
    procs.kill(victim)
    victim.wait(timeout=10)
    assert run.wait(master, 60) == 0, run.log(master)
    assert taken_back(run.log(master), victim.pid) > 0
    # Run twice: what the victim finished and had not reported yet - a report's
    # worth while reports are spaced (at most MAX_JOBS_PER_REPORT), and the
    # report that was on its way - none of what it never started.
    run.assert_all_handled(max_repeats=2 * MAX_JOBS_PER_REPORT)
    assert run.wait(survivor, 15) == 0


@pytest.mark.timeout(60)
def test_cpu_bound_handler_keeps_its_lease(procs, tmp_path):
    """Handlers that compute for 3 s without yielding, lease 1.5 s: nothing is sent twice.

    The slave's request loop cannot run while a handler hogs the process, so
    only the liveness thread keeps the lease alive.  The busy slave (one
    greenlet) takes both jobs and starts the first.  A second, idle slave
    joins: it is given the job the busy one has not started (the liveness
    thread gives it back), never the one it is running, however long that
    takes past the lease.
    """
    run = Run(procs, tmp_path, 2, TM_SPIN=3)
    master = run.master("--lease-timeout", 1.5)
    busy = run.slave("--concurrency", 1)
    wait_for(run.started_jobs, 20, what="the first job to start")
    idle = run.slave("--concurrency", 1)
    assert run.wait(master, 40) == 0, run.log(master)
    log = run.log(master)
    assert "silent" not in log, log
    assert sorted(run.handled()) == [0, 1]
    started = run.started_jobs()
    assert sorted(job for job, _ in started) == [0, 1], f"a job was started twice: {started}"
    assert (0, busy.pid) in started, started
    assert run.wait(busy, 15) == 0
    assert run.wait(idle, 15) == 0


# ------------------------------------------------------ handlers that fail


@pytest.mark.timeout(90)
def test_a_finished_run_with_failed_jobs_run_again_exits_1_and_points_to_retry_failed(procs, tmp_path):
    """Running a finished run again is no success while jobs wait in the failures file."""
    run = Run(procs, tmp_path, 50, TM_BAD="7")
    master = run.master("--max-retries", 0, *SHORT_LINGER)
    run.slave()
    assert run.wait(master, 60) == 1, run.log(master)
    again = run.master("--max-retries", 0, *SHORT_LINGER)
    assert run.wait(again, 30) == 1, run.log(again)
    line = summary_line(run.log(again))
    assert "already finished" in line and "1 jobs failed for good" in line, line
    assert str(run.failures) in line and "--retry-failed" in line, line


@pytest.mark.timeout(90)
def test_failing_jobs_are_recorded_then_retry_failed_replays_them(procs, tmp_path):
    """A handler that always raises for some jobs: retried, recorded, replayed with --retry-failed."""
    bad = [7, 123, 250, 499]
    fixed, gate = tmp_path / "fixed.txt", tmp_path / "gate"
    run = Run(procs, tmp_path, 500, TM_BAD=",".join(map(str, bad)), TM_FIXED=fixed, TM_GATE=gate)
    master = run.master("--max-retries", 2, "--lease-timeout", 3, *SHORT_LINGER)
    slaves = [run.slave(), run.slave()]
    # No job runs before both slaves joined, so that retries can go to the other one.
    wait_for(lambda: run.log(master).count(" joined ") == 2, 20, what="both slaves to join")
    gate.touch()
    assert run.wait(master, 60) == 1, run.log(master)
    for slave in slaves:
        assert run.wait(slave, 15) == 0
    log = run.log(master)
    line = summary_line(log)
    assert "496 finished, 4 failed" in line, line
    assert str(run.failures) in line and "--retry-failed" in line, line
    assert mode(run.failures) == 0o600

    entries = run.failure_entries()
    assert sorted(e["position"] for e in entries) == bad  # in the order they failed for good
    starts = run.started_jobs()
    slave_pids = {s.pid for s in slaves}
    for entry in entries:
        position = entry["position"]
        assert entry["attempts"] == 3, entry  # the first try and --max-retries 2 retries
        assert entry["type"] == "ValueError"
        assert entry["message"] == f"job {position} is broken"
        assert "in handle_job" in entry["traceback"] and str(run.module) in entry["traceback"]
        assert 'raise ValueError(f"job {i} is broken")' in entry["traceback"]
        assert entry["job_repr"] == repr(position)
        assert pickle.loads(base64.b64decode(entry["job"])) == position
        assert entry["slave"] and entry["time"]
        tries = [pid for i, pid in starts if i == position]
        assert len(tries) == 3, f"job {position} ran {len(tries)} times, not 3"
        assert set(tries) <= slave_pids
        repeated = [a for a, b in zip(tries, tries[1:], strict=False) if a == b]
        assert not repeated, f"job {position} retried on the slave it failed on: {tries}"
    assert sorted(run.handled()) == sorted(set(range(run.n)) - set(bad))

    # Replay with the handler fixed for all but one job: that one stays in the file.
    fixed.write_text("250")
    master = run.master("--max-retries", 2, "--lease-timeout", 3, "--retry-failed", *SHORT_LINGER)
    slave = run.slave()
    assert run.wait(master, 60) == 1, run.log(master)
    run.wait(slave, 15)
    line = summary_line(run.log(master))
    assert "3 finished, 1 failed" in line, line
    [entry] = run.failure_entries()
    assert entry["position"] == 250 and entry["attempts"] == 3
    assert mode(run.failures) == 0o600

    # Fixed for good: the last one leaves the file too.
    fixed.write_text("")
    master = run.master("--max-retries", 2, "--lease-timeout", 3, "--retry-failed", *SHORT_LINGER)
    slave = run.slave()
    assert run.wait(master, 60) == 0, run.log(master)
    run.wait(slave, 15)
    assert "1 finished, 0 failed" in summary_line(run.log(master))
    assert run.failures.read_bytes() == b""
    run.assert_all_handled()

    # Nothing left to replay.
    again = procs.run(run.master_argv("--retry-failed"), env=run.env, timeout=30)
    assert again.returncode == 0, again.stderr
    assert "no failed jobs to retry" in again.stderr


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["TM_SLEEP", "TM_SPIN"], ids=["sleeping", "cpu-bound"])
def test_job_timeout(procs, tmp_path, how):
    """--job-timeout fails a job that runs too long, whether it yields (sleep) or not (a busy loop)."""
    run = Run(procs, tmp_path, 20, TM_SLOW="5", **{how: 60})
    master = run.master("--max-retries", 1, "--lease-timeout", 3, *SHORT_LINGER)
    started = time.monotonic()
    slave = run.slave("--job-timeout", 1, "--concurrency", 2)
    assert run.wait(master, 40) == 1, run.log(master)
    elapsed = time.monotonic() - started
    assert elapsed < 20, f"the overrunning job was not cut short: the run took {elapsed:.0f}s"
    [entry] = run.failure_entries()
    assert entry["position"] == 5 and entry["attempts"] == 2, entry
    assert entry["type"] == "JobTimeout", entry
    assert "--job-timeout 1.0s" in entry["message"], entry
    assert sorted(run.handled()) == [i for i in range(run.n) if i != 5]
    assert run.wait(slave, 15) == 0, run.log(slave)


# ------------------------------------------------------- a broken source


@pytest.mark.timeout(60)
def test_get_jobs_exception_stops_cleanly_and_same_command_resumes(procs, tmp_path):
    fixed = tmp_path / "source-fixed"
    run = Run(procs, tmp_path, 3000, TM_SOURCE_FAIL_AT=1700, TM_SOURCE_FIXED=fixed)
    master = run.master("--size", 500, *SHORT_LINGER)
    slave = run.slave()
    assert run.wait(master, 40) == 1, run.log(master)
    log = run.log(master)
    assert "get_jobs raised an exception; fix it and run the same command to resume" in log, log
    assert "Traceback" in log and "in get_jobs" in log and str(run.module) in log, log
    assert "RuntimeError: the job source broke at 1700" in log, log
    assert run.wait(slave, 15) == 0
    # The master ran (a prefix of) the jobs before the broken one, each once, and saved that.
    done = sorted(run.handled())
    assert done == list(range(len(done))) and len(done) <= 1700, done[-5:]
    doc = run.state_doc()
    assert doc["complete"] is False and doc["finished"] == len(done), doc

    fixed.touch()
    master = run.master("--size", 500, *SHORT_LINGER)
    slave = run.slave()
    assert run.wait(master, 40) == 0, run.log(master)
    assert f"{run.n - len(done)} finished, 0 failed" in summary_line(run.log(master))
    run.assert_all_handled()
    assert run.state_doc()["complete"] is True
    assert run.wait(slave, 15) == 0


# ------------------------------------------------------ signals to the master


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_signal_to_master_interrupts_and_same_command_resumes(procs, tmp_path, sig, code):
    run = Run(procs, tmp_path, 3000, TM_SLEEP=0.01)
    master = run.master("--grace", 20, *SHORT_LINGER)
    slave = run.slave()
    run.wait_handled(500)
    master.send_signal(sig)
    assert run.wait(master, 30) == code, run.log(master)
    log = run.log(master)
    line = next((x for x in log.splitlines() if x.startswith("tm-master: interrupted: ")), None)
    assert line, log
    finished = int(line.split()[2])
    assert "run the same command to resume" in line
    assert run.wait(slave, 15) == 0, run.log(slave)
    # The jobs in flight were finished and acknowledged during the grace period.
    assert finished == len(run.handled()) == run.state_doc()["finished"], line
    assert finished < run.n

    master = run.master("--grace", 20, *SHORT_LINGER)
    slave = run.slave()
    assert run.wait(master, 60) == 0, run.log(master)
    assert f"{run.n - finished} finished, 0 failed" in summary_line(run.log(master))
    run.assert_all_handled()
    assert run.wait(slave, 15) == 0


@pytest.mark.timeout(60)
def test_second_sigint_skips_the_grace_period(procs, tmp_path):
    """Jobs that take a minute, --grace 60: the second Ctrl-C stops the master at once."""
    run = Run(procs, tmp_path, 20, TM_SLEEP=60)
    master = run.master("--grace", 60, *SHORT_LINGER)
    run.slave("--concurrency", 3)
    wait_for(lambda: len(run.started_jobs()) >= 3, 20, what="jobs in flight")
    master.send_signal(signal.SIGINT)
    run.wait_log(master, "stopping", 10)
    time.sleep(0.5)  # still waiting for the jobs in flight...
    assert master.poll() is None, run.log(master)
    master.send_signal(signal.SIGINT)
    stopped = time.monotonic()
    assert run.wait(master, 20) == 130, run.log(master)
    assert time.monotonic() - stopped < 10
    assert "interrupted: 0 finished, run the same command to resume" in run.log(master)
    assert run.handled() == []


@pytest.mark.timeout(60)
def test_master_stopped_with_jobs_in_flight_tells_its_slaves_to_quit(procs, tmp_path):
    """--grace runs out with jobs still running: the master exits 130 and its slaves quit too.

    The slave here holds a full queue of minute-long jobs, so it has nothing
    to ask the master until one of them ends.
    """
    run = Run(procs, tmp_path, 20, TM_SLEEP=60)
    master = run.master("--grace", 1, *SHORT_LINGER)
    slave = run.slave("--concurrency", 3)
    wait_for(lambda: len(run.started_jobs()) >= 3, 20, what="jobs in flight")
    master.send_signal(signal.SIGINT)
    assert run.wait(master, 20) == 130, run.log(master)
    assert "interrupted: 0 finished" in run.log(master)
    try:
        slave.wait(timeout=15)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            "the slave was not told to quit: 15 s after the master exited it is still running the jobs of a "
            f"run that is over\nmaster log:\n{run.log(master)}"
        ) from None


@pytest.mark.timeout(90)
def test_sigterm_to_tm_run_leaves_no_process_and_same_command_resumes(procs, tmp_path):
    run = Run(procs, tmp_path, 4000, TM_SLEEP=0.01)
    argv = tm("run", run.module, 2, f"n={run.n}", "--state-file", run.state, "--no-progress")
    tm_run = run.start(argv, "tm-run")
    run.wait_handled(500)
    children = wait_for(
        lambda: len(descendants(tm_run.pid)) >= 3 and descendants(tm_run.pid), 10, what="master and 2 slaves"
    )
    tm_run.send_signal(signal.SIGTERM)
    assert run.wait(tm_run, 40) == 143, run.log(tm_run)
    log = run.log(tm_run)
    assert "interrupted: " in log and "run the same command to resume" in log, log
    wait_for(lambda: all(pid_gone(pid) for pid in children), 10, what="every child of tm-run to exit")
    finished = run.state_doc()["finished"]
    assert 0 < finished < run.n
    assert finished == len(set(run.handled()))

    tm_run = run.start(argv, "tm-run")
    assert run.wait(tm_run, 60) == 0, run.log(tm_run)
    assert f"{run.n - finished} finished, 0 failed" in summary_line(run.log(tm_run))
    run.assert_all_handled()


# -------------------------------------------------------- signals to a slave


@pytest.mark.timeout(60)
def test_sigint_to_slave_finishes_running_jobs_and_master_resends_the_rest(procs, tmp_path):
    """A slave told to stop runs its current jobs to the end, reports them and leaves;
    the jobs it held but never started go to the next slave at once, not after the
    (here: 60 s) lease."""
    # 1 s jobs: ample time for the SIGINT to reach a slave mid-job (sent once two started)
    run = Run(procs, tmp_path, 12, TM_SLEEP=1)
    master = run.master("--lease-timeout", 60, *SHORT_LINGER)
    leaving = run.slave("--concurrency", 2)
    wait_for(lambda: len(run.started_jobs()) >= 2, 20, what="two jobs running")
    leaving.send_signal(signal.SIGINT)
    assert run.wait(leaving, 15) == 130, run.log(leaving)
    running = sorted(i for i, _ in run.started_jobs())
    assert len(running) == 2, f"the stopping slave started more jobs: {running}"
    assert sorted(run.handled()) == running, "the running jobs were not finished"
    assert "Traceback" not in run.log(leaving)

    slave = run.slave("--concurrency", 10)  # the 10 jobs left, in one round
    assert run.wait(master, 25) == 0, run.log(master)
    log = run.log(master)
    assert "silent" not in log, log
    assert f"{run.n} finished, 0 failed" in summary_line(log)
    run.assert_all_handled()  # exactly once: nothing re-sent that had run
    assert run.wait(slave, 15) == 0


# ------------------------------------------------- a master that goes away


@pytest.mark.timeout(60)
def test_slaves_give_up_on_a_master_that_does_not_come_back(procs, tmp_path):
    """SIGKILL the master: each slave exits non-zero after --timeout x --retries, naming the master."""
    run = Run(procs, tmp_path, 100000, TM_SLEEP=0.01)
    master = run.master()
    slaves = [run.slave("--timeout", 1000, "--retries", 3) for _ in range(2)]
    # Both must have joined: one still starting when the master dies never had
    # a master to lose (it says "no master answered", which another test checks).
    wait_for(lambda: run.log(master).count(" joined ") == 2, 20, what="both slaves to join")
    run.wait_handled(200)
    procs.kill(master)
    master.wait(timeout=10)
    killed = time.monotonic()
    for slave in slaves:
        code = run.wait(slave, 20)
        elapsed = time.monotonic() - killed
        log = run.log(slave)
        assert code == 1, log
        assert 2.0 <= elapsed <= 10, f"gave up after {elapsed:.1f}s (3 tries of 1 s):\n{log}"
        assert f"tm-slave: error: lost the master at {run.address}: no answer after 3 tries of 1000 ms" in log, log
        assert "Traceback" not in log, log


@pytest.mark.timeout(30)
def test_slave_without_master_gives_up(procs, tmp_path):
    run = Run(procs, tmp_path, 10)
    started = time.monotonic()
    slave = run.slave("--timeout", 500, "--retries", 3)
    assert run.wait(slave, 20) == 1
    assert time.monotonic() - started >= 1.5
    log = run.log(slave)
    assert f"tm-slave: error: no master answered at {run.address} after 3 tries of 500 ms" in log, log


@pytest.mark.timeout(90)
def test_restarted_master_slaves_rejoin_and_run_completes(procs, tmp_path):
    """SIGKILL the master, start it again: the waiting slaves are RESET, rejoin and finish the run."""
    size = 1000
    run = Run(procs, tmp_path, 7000, TM_SLEEP=0.01)
    master = run.master("--size", size, "--lease-timeout", 3)
    slaves = [run.slave("--timeout", 500, "--retries", 20) for _ in range(2)]
    watch = ProgressWatch(run.record)
    wait_for(lambda: run.state.exists() and watch.count() >= 3000, 30, what="a checkpoint and 3000 jobs handled")
    allowed = size + watch.handled_in_last(1.5) + 100
    procs.kill(master)
    master.wait(timeout=10)
    for slave in slaves:  # both notice the master is gone
        run.wait_log(slave, "no answer within 500 ms", 10)
    master = run.master("--size", size, "--lease-timeout", 3)
    assert run.wait(master, 60) == 0, run.log(master)
    log = run.log(master)
    assert "resuming at job" in log, log
    assert log.count(" joined ") == 2, log
    for slave in slaves:
        assert run.wait(slave, 15) == 0, run.log(slave)
        assert "the master restarted; joining its new run" in run.log(slave)
    run.assert_all_handled(max_repeats=allowed)
    assert run.state_doc()["finished"] == run.n


@pytest.mark.timeout(60)
def test_a_slave_whose_rejoin_after_reset_fails_exits_1(procs, tmp_path):
    """A master says RESET, then never answers the new hello: the slave says so and exits 1 (issue 12, defect 1)."""
    import zmq

    from taskmaster.wire import protocol

    context = zmq.Context()
    master = context.socket(zmq.ROUTER)
    master.setsockopt(zmq.LINGER, 0)
    port = master.bind_to_random_port("tcp://127.0.0.1")
    try:
        module = write_module(tmp_path, "rejoin_jobs", "def handle_job(i):\n    pass\n")
        log = tmp_path / "slave.log"
        with open(log, "w") as out:
            slave = procs.start(
                tm("slave", module, "--address", f"tcp://127.0.0.1:{port}", "--timeout", 300, "--retries", 2,
                   "--no-progress", "--insecure"),  # the master here is a plain ROUTER
                stdout=out,
                stderr=out,
            )
        hellos = resets = 0
        deadline = time.monotonic() + 30
        while slave.poll() is None and time.monotonic() < deadline:
            if not master.poll(100):
                continue
            identity, kind, *_ = master.recv_multipart()
            if kind == protocol.HELLO:
                hellos += 1
                if hellos == 1:  # welcome the first hello only
                    master.send_multipart([identity, *protocol.welcome("run-1", "token-1", 30.0, 10.0)])
            elif kind == protocol.REQUEST and not resets:
                resets += 1
                master.send_multipart([identity, *protocol.reset("this master does not know that run")])
        assert slave.wait(30) == 1, log.read_text()
        assert hellos >= 2 and resets == 1, (hellos, resets)
        assert "no master answered" in log.read_text(), log.read_text()
    finally:
        master.close(0)
        context.term()
