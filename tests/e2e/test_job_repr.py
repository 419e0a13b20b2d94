"""--no-job-repr: logs name jobs by position only (issue 23, part 4).

A job's repr can hold what its code needs - a DSN with a password - and the
slave logs a failed job's repr, the master an unpicklable job's.  With
--no-job-repr (or TASKMASTER_NO_JOB_REPR=1) neither does, on stderr or in the
--log-file; without it they do, as before.
"""

from __future__ import annotations

import pytest
from conftest import tcp_address, tm, write_module

SECRET = "s3cr3t-pw"
JOBS = f"""
class Job:
    def __init__(self, i):
        self.i = i

    def __repr__(self):
        return f"Job({{self.i}}, dsn=postgresql://app:{SECRET}@db/prod)"


class Unpicklable(Job):
    def __reduce__(self):
        raise TypeError("not picklable")


def get_jobs(last=0, n="4", bad=""):
    for i in range(int(last), int(n)):
        yield Unpicklable(i) if str(i) == bad else Job(i)


def handle_job(job):
    if job.i % 2 == 0:
        raise ValueError("no such row")
"""


@pytest.fixture
def module(tmp_path):
    return write_module(tmp_path, "dsnjobs", JOBS)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("hidden", [False, True], ids=["default", "no-job-repr"])
def test_tm_run_logs_a_failed_jobs_repr_unless_told_not_to(procs, tmp_path, module, hidden):
    log = tmp_path / "run.log"
    argv = tm("run", module, 1, "--no-progress", "--max-retries", "0", "--log-file", log)
    result = procs.run(argv + (["--no-job-repr"] if hidden else []), timeout=50)
    assert result.returncode == 1, result.stderr
    for text in (result.stderr, log.read_text()):
        assert "job 0 failed" in text and "job 2 failed" in text and "ValueError: no such row" in text
        assert (SECRET in text) is not hidden, text


@pytest.mark.timeout(60)
def test_the_environment_variable_turns_it_off_for_master_and_slave(procs, tmp_path, module):
    address = tcp_address()
    env = {"TASKMASTER_NO_JOB_REPR": "1"}
    master = procs.start(tm("master", module, "--address", address, "--no-progress", "--max-retries", "0"), env=env)
    slave = procs.start(tm("slave", module, "--address", address, "--no-progress"), env=env)
    _, master_err = master.communicate(timeout=50)
    _, slave_err = slave.communicate(timeout=20)
    assert master.returncode == 1, master_err
    assert "job 0 failed" in slave_err and "ValueError: no such row" in slave_err, slave_err
    assert SECRET not in slave_err + master_err


@pytest.mark.timeout(60)
@pytest.mark.parametrize("hidden", [False, True], ids=["default", "no-job-repr"])
def test_the_masters_unpicklable_job_message(procs, tmp_path, module, hidden):
    argv = tm("run", module, 1, "bad=1", "--no-progress") + (["--no-job-repr"] if hidden else [])
    result = procs.run(argv, timeout=50)
    assert result.returncode == 2, result.stderr
    assert "job at position 1 cannot be pickled" in result.stderr, result.stderr
    assert (SECRET in result.stderr) is not hidden, result.stderr


@pytest.mark.timeout(60)
def test_tm_spawn_passes_it_to_its_slaves(procs, tmp_path, module):
    address = tcp_address()
    master = procs.start(tm("master", module, "--address", address, "--no-progress", "--max-retries", "0"))
    spawn = procs.start(tm("spawn", module, 2, "--address", address, "--no-progress", "--no-job-repr"))
    _, master_err = master.communicate(timeout=50)
    _, spawn_err = spawn.communicate(timeout=20)
    assert master.returncode == 1, master_err
    assert "job 0 failed" in spawn_err and "ValueError: no such row" in spawn_err, spawn_err
    assert SECRET not in spawn_err
