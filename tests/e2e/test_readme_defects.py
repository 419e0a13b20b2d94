"""Issue 25: what a user following README.rst met with a module of their own, through the real commands.

Each test runs the commands (tm-run, tm-master, tm-slave, the Slurm scripts
with bash) on real processes, sockets and files, and checks what the user
sees: exit codes, the lines on stderr, the files left behind.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, REPO, free_port, script, wait_for, write_module

JOBS = """
import os, time

def get_jobs(last=0, n="100", **kwargs):
    stop = os.environ.get("TM_RAISE_AT")
    for i in range(int(last), int(n)):
        if stop and i == int(stop):
            raise RuntimeError("get_jobs stops here on purpose")
        yield i

def handle_job(i):
    delay = float(os.environ.get("TM_DELAY", "0"))
    if delay:
        time.sleep(delay)
    stuck = os.environ.get("TM_STUCK_AT")
    if stuck and i == int(stuck):
        time.sleep(60)
    fail = os.environ.get("TM_FAIL_EVERY")
    if fail and i % int(fail) == 0:
        raise ValueError(f"job {i} fails on purpose")
"""

TIMESTAMPED = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?:DEBUG|INFO|WARNING|ERROR) ")


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_module(tmp_path, "jobs", JOBS)


def tm_run(procs, *args: str, env: dict | None = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return procs.run([script("tm-run"), *map(str, args), "--no-progress"], env=env, timeout=timeout)


# --------------------------------------------------------- item 6: Slurm


def slurm_env(run_dir: Path, **extra: str) -> dict[str, str]:
    """What a Slurm job would inherit: the venv's commands on the PATH, the run directory."""
    return {
        "PATH": os.pathsep.join([str(Path(PYTHON).parent), os.environ.get("PATH", "")]),
        "TM_RUN_DIR": str(run_dir),
        "TM_POLL_SECONDS": "0.2",
        "TASKMASTER_NO_PROGRESS": "1",
        **extra,
    }


@pytest.mark.timeout(180)
def test_a_late_slurm_task_after_a_run_with_failures_exits_0_at_once(procs, tmp_path, jobs):
    """slaves.sbatch took only ``"exit_code": 0`` for a run that is over: a late task waited, then exited 1.

    The scripts run under bash, as Slurm runs them, without Slurm: the master
    job, one array task during the run, and one that starts after the master
    finished with failed jobs (exit 1).
    """
    run_dir = tmp_path / "taskmaster-run"
    port = free_port()
    master_env = slurm_env(run_dir, TM_BIND=f"tcp://127.0.0.1:{port}", TM_HOST="127.0.0.1", TM_PORT=str(port))
    # --linger 0.5: the one task runs every job, so it joined before the end and is told to quit on its
    # request; the default linger would only hold the master 3 s from its start.
    argv = ["bash", str(REPO / "deploy/slurm/master.sbatch"), str(jobs), "n=60", "--max-retries", "0"]
    argv += ["--linger", "0.5"]
    master = procs.start(argv, env=master_env)
    task_env = slurm_env(run_dir, TASKMASTER_WAIT_FOR_MASTER="30", TM_FAIL_EVERY="10")
    task = procs.start(["bash", str(REPO / "deploy/slurm/slaves.sbatch"), str(jobs)], env=task_env)
    _, master_err = master.communicate(timeout=90)
    assert master.returncode == 1, master_err  # 6 jobs failed for good
    task.communicate(timeout=60)
    assert task.returncode == 0
    result = json.loads((run_dir / "result.json").read_text())
    assert result["exit_code"] == 1 and result["failed"] == 6

    late = procs.run(
        ["bash", str(REPO / "deploy/slurm/slaves.sbatch"), str(jobs)],
        env=slurm_env(run_dir, TASKMASTER_WAIT_FOR_MASTER="5"),
        timeout=60,
    )
    assert late.returncode == 0, late.stderr
    assert f"the run in {run_dir} is over" in late.stderr
    assert "tm-slave" not in late.stderr  # it never started a slave to wait for a master that is gone


@pytest.mark.timeout(120)
def test_a_late_slurm_task_after_a_stopped_master_waits_for_the_next_one(procs, tmp_path, jobs):
    """A master stopped by scancel (SIGTERM) is resubmitted to resume: its result.json does not end the slaves."""
    run_dir = tmp_path / "taskmaster-run"
    port = free_port()
    master_env = slurm_env(run_dir, TM_BIND=f"tcp://127.0.0.1:{port}", TM_HOST="127.0.0.1", TM_PORT=str(port))
    # --linger 0: no slave ever joins this master; the default would only hold it 3 s from its start.
    argv = ["bash", str(REPO / "deploy/slurm/master.sbatch"), str(jobs), "n=60", "--linger", "0"]
    master = procs.start(argv, env=master_env)
    wait_for(lambda: (run_dir / "master.address").exists() and (run_dir / "secret").exists(), 30, what="the address")
    address = (run_dir / "master.address").read_text().strip()
    status = [script("tm-status"), "--address", address, "--secret-file", str(run_dir / "secret"), "--timeout", "500"]
    wait_for(lambda: subprocess.run(status, capture_output=True).returncode == 0, 30, what="the master answering")
    master.terminate()  # the shell exec'd tm-master: Slurm's SIGTERM reaches it
    master.communicate(timeout=60)
    assert master.returncode == 143
    result = json.loads((run_dir / "result.json").read_text())
    assert result["exit_code"] == 143 and result["over"] is False

    late = procs.run(
        ["bash", str(REPO / "deploy/slurm/slaves.sbatch"), str(jobs)],
        # 500 ms tries instead of 2500: how long each try lasts is not what is checked, only that
        # the slave waits for a master (and gives up, none coming) instead of calling the run over
        env=slurm_env(run_dir, TASKMASTER_WAIT_FOR_MASTER="2", TASKMASTER_TIMEOUT="500"),
        timeout=60,
    )
    assert late.returncode == 1  # it waited for a resubmitted master, which never came
    assert "--wait-for-master" in late.stderr, late.stderr
    assert "is over" not in late.stderr


# ------------------------------------------- items 8, 9: a replay's counts


@pytest.mark.timeout(120)
def test_a_replay_that_clears_the_failures_updates_the_run_s_counts(procs, tmp_path, jobs):
    """After --retry-failed ran every failed job to success, the run was still "10 failed"."""
    first = tm_run(procs, jobs, 2, "n=100", "--max-retries", "0", env={"TM_FAIL_EVERY": "10"})
    assert first.returncode == 1, first.stderr
    assert "90 finished, 10 failed" in first.stderr

    replay = tm_run(procs, jobs, 2, "n=100", "--retry-failed")
    assert replay.returncode == 0, replay.stderr
    assert "10 finished, 0 failed" in replay.stderr

    again = tm_run(procs, jobs, 2, "n=100")
    assert again.returncode == 0, again.stderr
    assert "this run already finished (100 jobs finished, 0 failed" in again.stderr


@pytest.mark.timeout(120)
def test_a_slave_s_summary_counts_failed_attempts_not_jobs(procs, tmp_path, jobs):
    """The slaves' "N failed" counted attempts, the master's jobs: 2 jobs failed for good after 2 attempts each."""
    result = tm_run(procs, jobs, 1, "n=20", "--max-retries", "1", env={"TM_FAIL_EVERY": "10"})
    assert result.returncode == 1, result.stderr
    assert "18 finished, 2 failed" in result.stderr  # the master: jobs
    slave_line = [line for line in result.stderr.splitlines() if " jobs finished, " in line and "slave" in line]
    assert len(slave_line) == 1, result.stderr
    assert "18 jobs finished, 4 attempts failed" in slave_line[0]


# ----------------------------------------------------- item 10: the logs


@pytest.mark.timeout(120)
def test_a_repeated_error_logs_its_traceback_once_with_a_count(procs, tmp_path, jobs):
    """Every failed attempt logged a whole traceback: 3 jobs x 4 attempts made 12, all alike but for the message."""
    result = tm_run(procs, jobs, 1, "n=30", env={"TM_FAIL_EVERY": "10"})
    assert result.returncode == 1, result.stderr
    assert "27 finished, 3 failed" in result.stderr
    assert result.stderr.count("Traceback (most recent call last)") == 1  # one per distinct place that raised
    for job in (0, 10, 20):  # every attempt is still a line, with its message
        assert result.stderr.count(f"ValueError: job {job} fails on purpose") >= 4
    repeat = re.compile(r"failed: ValueError: job \d+ fails on purpose \(traceback as for job \d+ above; (\d+) times")
    repeats = repeat.findall(result.stderr)
    assert sorted(map(int, repeats)) == list(range(2, 13)), result.stderr


@pytest.mark.timeout(120)
def test_a_job_timeout_traceback_ends_in_the_handler_not_in_gevent(procs, tmp_path, jobs):
    """A JobTimeout's traceback carried gevent's hub frames below the handler's sleep."""
    result = tm_run(
        procs, jobs, 1, "n=3", "--job-timeout", "0.5", "--max-retries", "0", env={"TM_STUCK_AT": "1"}
    )
    assert result.returncode == 1, result.stderr
    assert "2 finished, 1 failed" in result.stderr
    block = result.stderr[result.stderr.index("Traceback (most recent call last)") :]
    block = block[: block.index("JobTimeout")]
    assert "time.sleep(60)" in block
    assert "gevent" not in block, block


CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # colours, and erasing a line


def assert_lines_stand_alone(out: str) -> list[str]:
    """Every timestamped log line starts a line of its own on the screen; the log lines."""
    out = CONTROL.sub("", out)
    found = list(TIMESTAMPED.finditer(out))
    for m in found:
        line_start = max(out.rfind("\n", 0, m.start()), out.rfind("\r", 0, m.start())) + 1
        assert out[line_start : m.start()].strip() == "", repr(out[line_start : m.end() + 60])
    return [out[m.start() : out.find("\n", m.start())] for m in found]


COUNTED = JOBS + "\ndef count_jobs(n='100', **kwargs):\n    return int(n)\n"


@pytest.mark.timeout(150)
def test_log_lines_on_a_terminal_start_on_a_line_of_their_own(procs, tmp_path):
    """Log lines were glued onto the progress bar: ``ETA:  --:--:--2026-12-07 ... INFO master: slave ... joined``."""
    from test_terminal import Terminal

    module = write_module(tmp_path, "counted", COUNTED)
    address = f"tcp://127.0.0.1:{free_port()}"
    terminal = Terminal()
    env = {"TERM": "xterm-256color", "TM_DELAY": "0.01"}
    master = terminal.start(procs, [script("tm-master"), module, "n=300", "--address", address], env)
    terminal.close_writer()
    wait_for(lambda: "%" in b"".join(terminal.chunks).decode(errors="replace"), 30, what="the bar")
    slaves = [
        procs.start([script("tm-slave"), module, "--address", address, "--no-progress"], env=env) for _ in range(2)
    ]
    assert master.wait(timeout=120) == 0
    for slave in slaves:
        slave.communicate(timeout=30)
    out = terminal.text()
    lines = assert_lines_stand_alone(out)
    assert sum(" joined " in line for line in lines) == 2, out[-3000:]
    assert "300 finished, 0 failed" in out


@pytest.mark.timeout(150)
def test_tm_run_s_slaves_log_lines_start_on_a_line_of_their_own(procs, tmp_path):
    """tm-run's slaves share the master's terminal: their lines were glued onto its bar too."""
    from test_terminal import Terminal

    module = write_module(tmp_path, "counted", COUNTED)
    terminal = Terminal()
    env = {"TERM": "xterm-256color", "TM_DELAY": "0.01", "TM_FAIL_EVERY": "50"}
    run = terminal.start(procs, [script("tm-run"), module, "2", "n=300", "--max-retries", "0"], env)
    terminal.close_writer()
    assert run.wait(timeout=120) == 1
    out = terminal.text()
    lines = assert_lines_stand_alone(out)
    assert sum(" ERROR slave " in line and " failed" in line for line in lines) == 6, out[-3000:]
    assert sum(" attempts failed, " in line for line in lines) == 2, out[-3000:]
    assert "294 finished, 6 failed" in out


# ------------------------------------------------ item 13: run identity


@pytest.mark.timeout(120)
def test_a_new_run_beside_an_unfinished_one_of_other_arguments_names_it(procs, tmp_path, jobs):
    """Another key=value silently started a new run: the unfinished one beside it is named, with its arguments."""
    stopped = tm_run(procs, jobs, 1, "n=100", env={"TM_RAISE_AT": "50"})
    assert stopped.returncode == 1, stopped.stderr
    (old_state,) = tmp_path.glob("taskmaster-*.state")

    other = tm_run(procs, jobs, 1, "n=200")
    assert other.returncode == 0, other.stderr
    notes = [line for line in other.stderr.splitlines() if old_state.name in line]
    assert len(notes) == 1, other.stderr
    assert "n=100" in notes[0] and "unfinished" in notes[0] and "to resume it" in notes[0]

    # The same command again resumes the first run, and says nothing about the second (finished) one.
    resumed = tm_run(procs, jobs, 1, "n=100")
    assert resumed.returncode == 0, resumed.stderr
    assert "n=200" not in resumed.stderr


# ------------------------------------------------------ item 14: README


def test_the_docs_state_file_names_are_the_real_ones():
    """The README showed ``...get_jobs-1d2c3b4a`` (8 hex digits, real ones have 12); sharded.py left out get_jobs."""
    from taskmaster.master import checkpoint

    real = Path(checkpoint.default_path("/srv/jobs.py:get_jobs", {})).name
    digest = re.fullmatch(r"taskmaster-jobs\.py\.get_jobs-([0-9a-f]+)\.state", real).group(1)
    docs = "".join(page.read_text() for page in [REPO / "README.rst", *sorted((REPO / "docs").rglob("*.rst"))])
    shown = re.findall(r"taskmaster-[\w.-]*?-([0-9a-f]{6,})\.(?:state|failures)", docs)
    assert shown and all(len(name) == len(digest) for name in shown), shown
    sharded = (REPO / "examples" / "sharded.py").read_text()
    assert "taskmaster-sharded.py.get_jobs-<hash>.state" in sharded
    assert "tens of thousands of jobs a second" not in sharded  # one master serves far more


def test_the_readme_s_quickstart_names_the_python_the_package_requires():
    import tomllib

    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.10"
    assert "On a fresh machine with Python 3.10 or newer" in (REPO / "README.rst").read_text()


def test_every_public_name_is_in_the_docs():
    """``taskmaster.UsageError`` was exported but not documented (the README's From Python: docs/guide/python.rst)."""
    import taskmaster

    page = (REPO / "docs" / "guide" / "python.rst").read_text()
    for name in taskmaster.__all__:
        if name != "__version__":
            assert f"taskmaster.{name}" in page or f"``{name}``" in page, name


@pytest.mark.timeout(120)
def test_back_to_back_masters_on_one_address_with_linger_0(procs, tmp_path, jobs):
    """--linger counts from the start: as the README now says, a script starting the next master at once needs 0."""
    address = f"tcp://127.0.0.1:{free_port()}"
    for n in (3, 4):
        master = procs.start([script("tm-master"), jobs, f"n={n}", "--address", address, "--no-progress",
                              "--linger", "0"])
        slave = procs.run([script("tm-slave"), jobs, "--address", address, "--no-progress"], timeout=60)
        assert slave.returncode == 0, slave.stderr
        _, err = master.communicate(timeout=60)
        assert master.returncode == 0, err
        assert f"{n} finished, 0 failed" in err


# ------------------------------------------ the helpers, in-process


def test_a_state_file_of_the_same_target_spelled_otherwise_is_named_too(tmp_path):
    """``taskmaster.example`` and ``taskmaster/example.py`` are one module: its unfinished run is found either way."""
    from taskmaster.master import checkpoint

    def unfinished(target: str, kwargs: dict, complete: bool = False) -> str:
        path = checkpoint.default_path(target, kwargs, str(tmp_path))
        checkpoint.save(path, checkpoint.State(target, kwargs, complete=complete))
        return path

    by_path = unfinished("/srv/jobs/pkg/example.py:get_jobs", {"n": "10"})
    unfinished("/srv/jobs/pkg/example.py:get_jobs", {"n": "30"}, complete=True)  # finished: nothing to resume
    unfinished("pkg.other:get_jobs", {})  # another module
    unfinished("pkg.example:other_function", {})  # another function
    (tmp_path / "taskmaster-broken.state").write_text("{not json")  # passed over
    new = checkpoint.default_path("pkg.example:get_jobs", {"n": "10"}, str(tmp_path))
    assert checkpoint.unfinished_beside(new, "pkg.example:get_jobs", {"n": "10"}) == [
        (by_path, "/srv/jobs/pkg/example.py:get_jobs", {"n": "10"})
    ]
    # Its own run is not "beside" it.
    assert checkpoint.unfinished_beside(by_path, "/srv/jobs/pkg/example.py:get_jobs", {"n": "10"}) == []


def test_settling_a_replay_moves_at_most_the_failed_count_and_leaves_other_files_alone(tmp_path):
    from taskmaster.master import checkpoint

    path = str(tmp_path / "run.state")
    checkpoint.save(path, checkpoint.State("m:get_jobs", {}, finished=90, failed=10, complete=True))
    checkpoint.settle_replay(path, "m:get_jobs", {}, succeeded=4)
    state = checkpoint.load(path, "m:get_jobs", {})
    assert (state.finished, state.failed, state.complete) == (94, 6, True)
    checkpoint.settle_replay(path, "m:get_jobs", {}, succeeded=50)  # more than were failed: clamped
    state = checkpoint.load(path, "m:get_jobs", {})
    assert (state.finished, state.failed) == (100, 0)

    before = (tmp_path / "run.state").read_bytes()
    checkpoint.settle_replay(path, "other:get_jobs", {}, succeeded=1)  # another run's file: untouched
    assert (tmp_path / "run.state").read_bytes() == before
    checkpoint.settle_replay(str(tmp_path / "missing.state"), "m:get_jobs", {}, succeeded=1)
    assert not (tmp_path / "missing.state").exists()
