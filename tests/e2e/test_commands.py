"""The commands as a user runs them: the README examples, the console scripts,
--help/--version, a full master + tm-spawn run, and a handler that fails."""

from __future__ import annotations

import json
import socket
import stat
import time
from importlib.metadata import version

import pytest
from conftest import (
    EXAMPLE,
    PYTHON,
    RECORDING_MODULE,
    REPO,
    SCRIPTS,
    descendants,
    handled,
    pid_gone,
    script,
    state_files,
    tcp_address,
    tm,
    wait_for,
    write_module,
)

EXAMPLE_JOBS = 20000


def finished_line(err: str, prog: str = "tm-master") -> str:
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: ") and " finished, " in line]
    assert lines, f"no summary line from {prog}:\n{err}"
    return lines[-1]


def check_clean_finish(result, prog: str = "tm-master") -> None:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


# ------------------------------------------------------------------ README


@pytest.mark.parametrize(
    "master_args, slave_target",
    [
        (["taskmaster.example"], "taskmaster.example"),
        (["taskmaster.example", "argument=value"], "taskmaster.example"),
        (["taskmaster.example:get_jobs"], "taskmaster.example:handle_job"),
    ],
    ids=["module", "key=value", "module:function"],
)
def test_readme_master_and_slave(procs, tmp_path, master_args, slave_target):
    """tm-master TARGET [key=value] and tm-slave TARGET, separate processes, one --address."""
    address = tcp_address()
    master = procs.start([script("tm-master"), *master_args, "--address", address, "--no-progress"])
    slave = procs.start([script("tm-slave"), slave_target, "--address", address, "--no-progress"])
    m_out, m_err = master.communicate(timeout=60)
    s_out, s_err = slave.communicate(timeout=30)
    assert master.returncode == 0, m_err
    assert slave.returncode == 0, s_err
    assert f"tm-master: {EXAMPLE_JOBS} finished, 0 failed" in m_err
    assert "Traceback" not in m_err + s_err
    # the slave says how many it ran
    assert f"{EXAMPLE_JOBS} jobs finished, 0 attempts failed" in s_err
    # the default state file lands in the current directory, and records the run as complete
    [state] = state_files(tmp_path)
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    doc = json.loads(state.read_text())
    assert doc["complete"] is True
    assert doc["finished"] == EXAMPLE_JOBS
    assert doc["kwargs"] == dict(a.split("=", 1) for a in master_args[1:])


def test_readme_commands_with_the_default_address(procs):
    """tm-master taskmaster.example and tm-slave taskmaster.example, exactly as written (tcp://127.0.0.1:3050)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", 3050))
        except OSError:
            pytest.skip("port 3050, the default address, is in use on this host")
    master = procs.start([script("tm-master"), "taskmaster.example"])
    slave = procs.start([script("tm-slave"), "taskmaster.example"])
    _, m_err = master.communicate(timeout=60)
    _, s_err = slave.communicate(timeout=30)
    assert master.returncode == 0, m_err
    assert slave.returncode == 0, s_err
    assert f"tm-master: {EXAMPLE_JOBS} finished, 0 failed" in m_err
    assert "tcp://127.0.0.1:3050" in m_err  # where it listened


def test_slave_without_a_master_gives_up_with_a_message(procs):
    address = tcp_address()  # nobody listens there
    result = procs.run(tm("slave", "taskmaster.example", "--address", address, "--timeout", "200", "--retries", "2",
                          "--no-progress"), timeout=30)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("tm-slave: error: ")]
    assert "no master answered" in line and address in line, line


def test_readme_master_and_spawn(procs):
    """tm-master taskmaster.example + tm-spawn taskmaster.example 2."""
    address = tcp_address()
    master = procs.start([script("tm-master"), "taskmaster.example", "--address", address, "--no-progress"])
    spawn = procs.start([script("tm-spawn"), "taskmaster.example", "2", "--address", address, "--no-progress"])
    _, m_err = master.communicate(timeout=60)
    _, s_err = spawn.communicate(timeout=30)
    assert master.returncode == 0, m_err
    assert spawn.returncode == 0, s_err
    assert f"tm-master: {EXAMPLE_JOBS} finished, 0 failed" in m_err
    # Both slave processes ran and ended cleanly; 20,000 no-op jobs can be over
    # before the second one has started, so it may have been told to quit at hello.
    assert m_err.count(" joined ") >= 1, m_err
    assert s_err.count(" jobs finished, ") == 2, s_err
    assert "Traceback" not in m_err + s_err


def test_master_and_spawn_over_ipc(procs, tmp_path, recording):
    """The same over an explicit ipc:// address."""
    module, record, env = recording
    address = f"ipc://{tmp_path / 'master.sock'}"
    master = procs.start(tm("master", module, "n=3000", "--address", address, "--no-progress"), env=env)
    spawn = procs.start(tm("spawn", module, 2, "--address", address, "--no-progress"), env=env)
    _, m_err = master.communicate(timeout=60)
    _, s_err = spawn.communicate(timeout=30)
    assert master.returncode == 0, m_err
    assert spawn.returncode == 0, s_err
    assert sorted(handled(record)) == list(range(3000))


def test_readme_tm_run(procs, tmp_path):
    """tm-run taskmaster/example.py 2, from another directory: the state file stays there."""
    # The Quickstart's first command leaves its own state file in the checkout:
    # only a new one would be this run's.
    before = set(REPO.glob("*.state"))
    result = procs.run([script("tm-run"), str(EXAMPLE), "2", "--no-progress"], timeout=60)
    check_clean_finish(result)
    assert f"tm-master: {EXAMPLE_JOBS} finished, 0 failed" in result.stderr
    assert len(state_files(tmp_path)) == 1
    assert set(REPO.glob("*.state")) == before, "tm-run wrote a state file into the repository"


def test_tm_run_relative_path_and_callbacks(procs, tmp_path, recording):
    """tm-run with a relative SCRIPT path and renamed callbacks."""
    module, record, env = recording
    source = module.read_text().replace("def get_jobs(", "def produce(").replace("def handle_job(", "def consume(")
    (tmp_path / "renamed.py").write_text(source)
    result = procs.run(tm("run", "renamed.py", 2, "n=500", "--get-jobs-callback", "produce",
                          "--handle-job-callback", "consume", "--no-progress"), env=env, timeout=60)
    check_clean_finish(result)
    assert sorted(handled(record)) == list(range(500))


def test_python_dash_m_forms(procs, recording):
    """python -m taskmaster master/spawn and python -m taskmaster.cli.master/slave run the same way."""
    module, record, env = recording
    address = tcp_address()
    # --linger 0.5: the one slave runs jobs, so it joined before the end and is told to quit on its
    # request; the default linger would hold this short run's master 3 s from its start.
    master = procs.start([PYTHON, "-m", "taskmaster.cli.master", str(module), "n=2000", "--address", address,
                          "--no-progress", "--linger", "0.5"], env=env)
    slave = procs.start([PYTHON, "-m", "taskmaster.cli.slave", str(module), "--address", address, "--no-progress"],
                        env=env)
    _, m_err = master.communicate(timeout=60)
    slave.communicate(timeout=30)
    assert master.returncode == 0 and slave.returncode == 0, m_err
    assert sorted(handled(record)) == list(range(2000))


# ------------------------------------------------------ scripts, help, version


@pytest.mark.parametrize("name", SCRIPTS)
def test_console_script_help_and_version(procs, name):
    path = script(name)
    result = procs.run([path, "--help"], timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {name} "), result.stdout
    assert "--address" in result.stdout
    result = procs.run([path, "--version"], timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{name} {version('taskmaster')}"


@pytest.mark.parametrize("command, prog", [("master", "tm-master"), ("slave", "tm-slave"),
                                           ("spawn", "tm-spawn"), ("run", "tm-run")])
def test_python_m_help_and_version(procs, command, prog):
    for argv in (tm(command), [PYTHON, "-m", f"taskmaster.cli.{command}"]):
        result = procs.run([*argv, "--help"], timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"usage: {prog} "), result.stdout
        result = procs.run([*argv, "--version"], timeout=30)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{prog} {version('taskmaster')}"


def test_python_m_taskmaster_without_command(procs):
    result = procs.run([PYTHON, "-m", "taskmaster"], timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: python -m taskmaster {"), result.stderr
    assert all(command in result.stderr for command in ("master", "slave", "spawn", "run"))
    result = procs.run([PYTHON, "-m", "taskmaster", "--help"], timeout=30)
    assert result.returncode == 0
    assert "usage:" in result.stderr + result.stdout


# ------------------------------------------------------------- full runs


@pytest.mark.timeout(120)
def test_master_and_spawn_handle_every_job_and_leave_nothing(procs, recording):
    n = 20000
    module, record, env = recording
    address = tcp_address()
    master = procs.start(tm("master", module, f"n={n}", "--address", address, "--no-progress"), env=env)
    spawn = procs.start(tm("spawn", module, 2, "--address", address, "--no-progress"), env=env)
    slaves = wait_for(lambda: len(descendants(spawn.pid)) == 2 and descendants(spawn.pid), 30,
                      what="tm-spawn's two slave processes")
    _, m_err = master.communicate(timeout=90)
    _, s_err = spawn.communicate(timeout=30)
    assert master.returncode == 0, m_err
    assert spawn.returncode == 0, s_err
    assert f"tm-master: {n} finished, 0 failed" in m_err
    assert "Traceback" not in m_err + s_err
    jobs = handled(record)
    assert sorted(set(jobs)) == list(range(n))
    assert len(jobs) == n, "a job ran twice although no process died"
    for pid in [master.pid, spawn.pid, *slaves]:
        wait_for(lambda pid=pid: pid_gone(pid), 5, what=f"process {pid} to be gone")


@pytest.mark.timeout(90)
def test_tm_run_leaves_no_process(procs, recording):
    module, record, env = recording
    run = procs.start(tm("run", module, 2, "n=4000", "--no-progress"), env={**env, "TM_DELAY": "0.005"})
    children = wait_for(lambda: len(descendants(run.pid)) >= 3 and descendants(run.pid), 30,
                        what="tm-run's master and slaves")
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert sorted(handled(record)) == list(range(4000))
    for pid in [run.pid, *children]:
        wait_for(lambda pid=pid: pid_gone(pid), 5, what=f"process {pid} to be gone")


# A job module whose second slave process is slow to start (a heavy import, a
# busy host): the first slave finishes the whole run before the second says hello.
LATE_SLAVE_MODULE = RECORDING_MODULE + '''
import sys
if sys.argv[0].endswith("slave.py"):
    try:
        os.close(os.open(RECORD + ".first-slave", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        time.sleep(2)
'''


@pytest.mark.timeout(60)
def test_tm_run_with_a_slave_that_starts_after_the_run_ended(procs, tmp_path, recording):
    """A run shorter than a slave's start-up: tm-run still ends cleanly, without waiting.

    The late slave must not sit out --retries x --timeout and then print
    'no master answered' (exit 1) for a run that succeeded.  (The late slave
    sleeps 2 s at import, the only way to make the race certain.)
    """
    _, record, env = recording
    module = write_module(tmp_path, "lateslave", LATE_SLAVE_MODULE)
    started = time.monotonic()
    # --timeout 5000 x --retries 3: a slave left to give up on its own would keep tm-run 15 s or more
    result = procs.run(tm("run", module, 2, "n=10", "--no-progress", "--timeout", "5000"), env=env, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert sorted(handled(record)) == list(range(10))
    assert "error" not in result.stderr, result.stderr
    assert elapsed < 12, f"tm-run took {elapsed:.1f}s for 10 jobs"


# ------------------------------------------------------ failing handler


@pytest.mark.timeout(90)
def test_failing_jobs_are_recorded_and_the_rest_handled(procs, tmp_path, recording):
    n, every = 2000, 100
    module, record, env = recording
    env = {**env, "TM_FAIL_EVERY": str(every)}
    address = tcp_address()
    master = procs.start(tm("master", module, f"n={n}", "--address", address, "--no-progress"), env=env)
    spawn = procs.start(tm("spawn", module, 2, "--address", address, "--no-progress"), env=env)
    _, m_err = master.communicate(timeout=60)
    spawn.communicate(timeout=30)
    failing = list(range(0, n, every))
    assert master.returncode == 1, m_err
    assert sorted(set(handled(record))) == [i for i in range(n) if i % every]
    [state] = state_files(tmp_path)
    failures_path = state.with_name(state.name[: -len(".state")] + ".failures.jsonl")
    summary = finished_line(m_err)
    assert f"{n - len(failing)} finished, {len(failing)} failed" in summary
    assert failures_path.name in summary, summary
    assert stat.S_IMODE(failures_path.stat().st_mode) == 0o600
    entries = [json.loads(line) for line in failures_path.read_text().splitlines() if line.strip()]
    assert sorted({e["position"] for e in entries}) == failing
    assert all(e["type"] == "ValueError" and "fails on purpose" in e["message"] for e in entries)
