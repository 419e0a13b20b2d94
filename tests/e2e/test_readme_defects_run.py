"""Issue 25: what a new user hit running tm-run and the README's commands, end to end.

Each test drives the real commands (real processes, sockets and files) and
checks what the user sees: exit codes, messages, files written, what ps
shows, which jobs ran when.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess

import pytest
from conftest import (
    PYTHON,
    descendants,
    error_line,
    pid_gone,
    start_logged,
    tail,
    tcp_address,
    text,
    tm,
    wait_exit,
    wait_for,
    write_module,
)

# get_jobs yields n integers; handle_job holds every job until TM_HOLD exists (if set).
HELD = """
import os, time

def get_jobs(last=0, n="20", **kwargs):
    return range(int(last), int(n))

def handle_job(i):
    gate = os.environ.get("TM_HOLD")
    while gate and not os.path.exists(gate):
        time.sleep(0.02)
"""


# ------------------------------------------------- 12: python -m taskmaster --help


@pytest.mark.timeout(60)
def test_python_m_taskmaster_help_lists_every_command(procs):
    result = procs.run(tm("--help")[:3] + ["--help"], timeout=30)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for command in ("master", "slave", "spawn", "run", "status", "ctl"):
        described = [line for line in lines if line.split()[:1] == [command] and len(line.split()) > 2]
        assert described, f"no line describing {command!r} in:\n{result.stdout}"


@pytest.mark.timeout(60)
def test_python_m_taskmaster_without_a_command_is_usage_and_exit_2(procs):
    result = procs.run(tm("--help")[:3], timeout=30)
    assert result.returncode == 2
    assert "usage: python -m taskmaster" in result.stderr


# ----------------------------------------------------------- 11: process names


def command_line(pid: int) -> str:
    return subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()


@pytest.mark.timeout(90)
def test_ps_shows_tm_run_children_as_tm_master_and_tm_slave(procs, tmp_path):
    module = write_module(tmp_path, "held", HELD)
    run_log = tmp_path / "run.log"
    run = start_logged(procs, tm("run", module, 2, "--no-progress"), run_log, {"TM_HOLD": str(tmp_path / "never")})
    wait_for(lambda: text(run_log).count(" joined ") == 2, 30, what=f"both slaves joined:\n{tail(run_log)}")
    lines = sorted(command_line(pid) for pid in descendants(run.pid))
    assert [line.split()[0] for line in lines] == ["tm-master", "tm-slave", "tm-slave"], lines
    # The rest of the command line says what each runs, as a tm-master/tm-slave started by hand would.
    assert all(str(module) in line for line in lines), lines


@pytest.mark.timeout(90)
def test_ps_shows_tm_spawn_children_as_tm_slave(procs, tmp_path):
    module = write_module(tmp_path, "held", HELD)
    address = tcp_address()
    master_log, spawn_log = tmp_path / "master.log", tmp_path / "spawn.log"
    env = {"TM_HOLD": str(tmp_path / "never")}
    start_logged(procs, tm("master", module, "--address", address, "--no-progress"), master_log, env)
    spawn = start_logged(procs, tm("spawn", module, 2, "--address", address), spawn_log, env)
    wait_for(lambda: text(master_log).count(" joined ") == 2, 30, what=f"both slaves joined:\n{tail(master_log)}")
    lines = [command_line(pid) for pid in descendants(spawn.pid)]
    assert [line.split()[0] for line in lines] == ["tm-slave", "tm-slave"], lines
    assert all(str(module) in line for line in lines), lines


@pytest.mark.timeout(90)
def test_ps_shows_taskmaster_run_children_as_tm_master_and_tm_slave(procs, tmp_path):
    module = write_module(tmp_path, "held", HELD)
    log = tmp_path / "run.log"
    code = f"import taskmaster; taskmaster.run({str(module)!r}, 1, linger=0)"
    caller = start_logged(procs, [PYTHON, "-c", code], log, {"TM_HOLD": str(tmp_path / "never")})

    seen: list[str] = []

    def named():
        # Each child names itself once started: wait for that (ps shows the interpreter before).
        seen[:] = sorted(command_line(pid) for pid in descendants(caller.pid))
        return [line.split()[:1] for line in seen] == [["tm-master"], ["tm-slave"]]

    try:
        wait_for(named, 30, what="tm-master and tm-slave in ps")
    except AssertionError:
        raise AssertionError(f"ps shows {seen}; {tail(log)}") from None


# ------------------------------------------------------- 1: --result-file


def result_of(path) -> dict:
    assert path.exists(), f"no result file {path}"
    return json.loads(path.read_text())


@pytest.mark.timeout(90)
@pytest.mark.parametrize("how", ["flag", "relative", "environment"])
def test_tm_run_writes_the_result_file(procs, tmp_path, how):
    module = write_module(tmp_path, "held", HELD)
    path = tmp_path / "out" / "result.json"
    path.parent.mkdir()
    argv, env = tm("run", module, 2, "n=30", "--no-progress"), {}
    if how == "flag":
        argv += ["--result-file", str(path)]
    elif how == "relative":
        argv += ["--result-file", "out/result.json"]  # from tm-run's working directory, tmp_path
    else:
        env["TASKMASTER_RESULT_FILE"] = str(path)
    result = procs.run(argv, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    outcome = result_of(path)
    assert (outcome["exit_code"], outcome["finished"], outcome["failed"]) == (0, 30, 0), outcome
    assert outcome["summary"].startswith("30 finished, 0 failed"), outcome


@pytest.mark.timeout(90)
def test_taskmaster_run_writes_the_result_file(procs, tmp_path):
    module = write_module(tmp_path, "held", HELD)
    path = tmp_path / "result.json"
    code = f"import taskmaster, sys; sys.exit(taskmaster.run({str(module)!r}, 2, result_file={str(path)!r}).exit_code)"
    result = procs.run([PYTHON, "-c", code], timeout=60)
    assert result.returncode == 0, result.stderr
    assert result_of(path)["finished"] == 20


@pytest.mark.timeout(60)
def test_tm_run_refuses_a_result_file_it_cannot_write(procs, tmp_path):
    module = write_module(tmp_path, "held", HELD)
    result = procs.run(tm("run", module, 1, "--result-file", str(tmp_path / "nodir" / "r.json")), timeout=30)
    error_line(result, "tm-run", "--result-file")


# ------------------------------------------------- 2: a function in a tm-run target


@pytest.mark.timeout(60)
@pytest.mark.parametrize("function", ["nope", "handle_job", "get_jobs"])
def test_tm_run_refuses_a_function_in_its_target(procs, tmp_path, function):
    module = write_module(tmp_path, "held", HELD)
    record = tmp_path / "ran"
    result = procs.run(tm("run", f"{module}:{function}", 1, "--no-progress"), timeout=30)
    line = error_line(result, "tm-run", "--get-jobs-callback", "--handle-job-callback")
    assert f"{module}:{function}" in line
    assert not list(tmp_path.glob("*.state")) and not record.exists()  # nothing ran


@pytest.mark.timeout(60)
@pytest.mark.parametrize("callback", ["get-jobs", "handle-job"])
def test_tm_run_names_its_callback_option_for_a_missing_function(procs, tmp_path, callback):
    module = write_module(tmp_path, "held", HELD)
    result = procs.run(tm("run", module, 1, f"--{callback}-callback", "nope"), timeout=30)
    line = error_line(result, "tm-run", "'nope'", f"--{callback}-callback NAME")
    assert ":NAME" not in line  # the target syntax tm-run refuses


@pytest.mark.timeout(60)
def test_taskmaster_run_refuses_a_function_in_its_target(tmp_path):
    module = write_module(tmp_path, "held", HELD)
    code = f"import taskmaster; taskmaster.run({str(module) + ':nope'!r}, 1)"
    result = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert "UsageError" in result.stderr and "get_jobs_callback=" in result.stderr, result.stderr
    assert not list(tmp_path.glob("*.state"))


# ------------------------------------------- 4: tm-run's slaves and a slow or dead master

SLOW_COUNT = """
import time

def count_jobs(n="30", **kwargs):
    time.sleep(float(kwargs.get("count_seconds", "2")))
    return int(n)

def get_jobs(last=0, n="30", **kwargs):
    return range(int(last), int(n))

def handle_job(i):
    pass
"""


@pytest.mark.timeout(120)
def test_tm_run_slaves_wait_for_a_master_that_is_still_starting(procs, tmp_path):
    # count_jobs outlasts the slaves' patience (2 tries of 200 ms): they must wait for their own master.
    module = write_module(tmp_path, "slowcount", SLOW_COUNT)
    argv = tm("run", module, 2, "count_seconds=2", "--timeout", "200", "--retries", "2", "--no-progress")
    result = procs.run(argv, timeout=90)
    assert result.returncode == 0, result.stderr
    assert "30 finished, 0 failed" in result.stderr
    assert "no master answered" not in result.stderr


def start_held_run(procs, tmp_path, *options):
    module = write_module(tmp_path, "held", HELD)
    run_log = tmp_path / "run.log"
    argv = tm("run", module, 2, "--no-progress", *options)
    run = start_logged(procs, argv, run_log, {"TM_HOLD": str(tmp_path / "never")})
    wait_for(lambda: text(run_log).count(" joined ") == 2, 30, what=f"both slaves joined:\n{tail(run_log)}")
    master, *slaves = sorted(descendants(run.pid), key=lambda pid: command_line(pid).split()[0])
    assert command_line(master).startswith("tm-master"), command_line(master)
    return run, run_log, master, slaves


@pytest.mark.timeout(90)
def test_tm_run_says_when_its_master_is_killed(procs, tmp_path):
    run, run_log, master, slaves = start_held_run(procs, tmp_path)
    os.kill(master, signal.SIGKILL)
    code = wait_exit(run, 30, run_log)
    assert code != 0
    lines = [line for line in text(run_log).splitlines() if line.startswith("tm-run: ")]
    assert len(lines) == 1, text(run_log)
    assert "master" in lines[0] and "SIGKILL" in lines[0], lines
    wait_for(lambda: all(pid_gone(pid) for pid in slaves), 30, what="the slaves to be gone")


@pytest.mark.timeout(90)
def test_tm_run_says_when_all_its_slaves_are_killed(procs, tmp_path):
    # --grace 1: tm-run stops the master, which waits that long for the jobs the dead slaves held (default 10 s).
    run, run_log, master, slaves = start_held_run(procs, tmp_path, "--grace", "1")
    for slave in slaves:
        os.kill(slave, signal.SIGKILL)
    code = wait_exit(run, 60, run_log)
    assert code != 0
    lines = [line for line in text(run_log).splitlines() if line.startswith("tm-run: ")]
    assert len(lines) == 1, text(run_log)
    assert "slave" in lines[0] and "SIGKILL" in lines[0], lines
    wait_for(lambda: pid_gone(master), 30, what="the master to be gone")


@pytest.mark.timeout(90)
def test_tm_run_says_when_one_slave_is_killed_and_the_others_finish_the_run(procs, tmp_path):
    run, run_log, master, slaves = start_held_run(procs, tmp_path, "--lease-timeout", "2")
    os.kill(slaves[0], signal.SIGKILL)
    wait_for(lambda: f"slave pid {slaves[0]} was killed by SIGKILL" in text(run_log), 30, what="tm-run's warning")
    (tmp_path / "never").touch()  # the jobs may end now
    assert wait_exit(run, 60, run_log) == 0, tail(run_log)
    assert "tm-master: 20 finished, 0 failed" in text(run_log)


# ------------------------------------------------------ 3: a --max-failures halt

# One job in ten fails; each attempt appends "<time> <job>" to TM_STARTS as it starts.
FAILING = """
import os, time

STARTS = os.environ["TM_STARTS"]
DELAY = float(os.environ.get("TM_DELAY", "0"))

def get_jobs(last=0, n="200000", **kwargs):
    return range(int(last), int(n))

def handle_job(i):
    fd = os.open(STARTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{time.time():.6f} {i}\\n".encode())
    finally:
        os.close(fd)
    if DELAY:
        time.sleep(DELAY)
    if i % 10 == 0:
        raise ValueError(f"job {i} fails on purpose")
"""


def logged_time(line: str) -> float:
    """The time of a log line ("2026-12-07 09:12:23,694 ERROR ..."), as time.time() counts."""
    stamp = " ".join(line.split()[:2])
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("delay", ["0", "0.01"], ids=["instant", "10ms"])
def test_a_max_failures_halt_takes_back_unstarted_jobs_and_ends_when_nothing_runs(procs, tmp_path, delay):
    module = write_module(tmp_path, "failing", FAILING)
    starts, run_log = tmp_path / "starts.txt", tmp_path / "run.log"
    # --grace far longer than the test may take: the run must end because nothing runs, not because time ran out.
    argv = tm("run", module, 2, "--max-failures", "20", "--concurrency", "10", "--grace", "600", "--no-progress")
    run = start_logged(procs, argv, run_log, {"TM_STARTS": str(starts), "TM_DELAY": delay})
    code = wait_exit(run, 90, run_log)
    log = text(run_log)
    assert code == 1, tail(run_log)
    assert "tm-master: halted: " in log, tail(run_log)
    halt_line = next(line for line in log.splitlines() if " ERROR master: halting: " in line)
    halted_at = logged_time(halt_line)
    started = [float(line.split()[0]) for line in starts.read_text().splitlines()]
    late = [t - halted_at for t in started if t > halted_at + 1.0]
    assert not late, f"{len(late)} of {len(started)} job attempts started more than 1 s after the halt: {late[:5]}"
