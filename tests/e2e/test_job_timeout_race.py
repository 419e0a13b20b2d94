"""--job-timeout interrupts the job, once, and nothing but the job.

The watchdog (the slave's liveness thread) sends SIGUSR2 every 50 ms while a
job that never yields is past its timeout; the signal handler raises
JobTimeout in it.  A second signal used to land after that, while the
failure was being recorded (recording it twice, which costs the job one of
its runs) or in a ``finally`` of the worker (killing the worker, and with it
the slave).  Here half the jobs spin for ever under a chain of 400
exceptions: formatting their traceback takes longer than a watchdog step,
so that the next signals come while a failure is being recorded.
"""

from __future__ import annotations

import collections
import json

import pytest
from conftest import handled, start_logged, tail, tcp_address, tm, wait_exit, wait_listening, write_module

pytestmark = pytest.mark.slow  # a stress test: it spins both cores until the race would have shown

SPINNING_JOBS = '''
import os

RECORD = os.environ["TM_RECORD"]


def get_jobs(last=0, n="40"):
    for i in range(int(last), int(n)):
        yield i


def _spin_in_a_chain(depth):
    """Spin for ever under `depth` exceptions being handled: a long traceback, slow to format."""
    try:
        raise ValueError(f"level {depth}")
    except ValueError:
        if depth:
            _spin_in_a_chain(depth - 1)
        while True:  # never yields: only the watchdog's signal stops it
            pass


def handle_job(i):
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{i}\\n".encode())  # one line per start
    os.close(fd)
    if i % 2 == 0:
        _spin_in_a_chain(400)
'''

N = 40
MAX_RETRIES = 2


@pytest.mark.timeout(170)
def test_each_timed_out_job_runs_max_retries_plus_one_times_and_no_worker_dies(procs, tmp_path):
    module = write_module(tmp_path, "spinjobs", SPINNING_JOBS)
    record = tmp_path / "started.txt"
    failures = tmp_path / "run.failures.jsonl"
    env = {"TM_RECORD": str(record)}
    address = tcp_address()
    mlog = tmp_path / "master.log"
    master_argv = tm("master", module, f"n={N}", "--address", address, "--no-progress",
                     "--max-retries", MAX_RETRIES, "--failures-file", failures)  # fmt: skip
    master = start_logged(procs, master_argv, mlog, env)
    wait_listening(master, mlog)
    slave_logs = [tmp_path / f"slave{i}.log" for i in range(2)]
    slaves = [
        start_logged(procs, tm("slave", module, "--address", address, "--no-progress", "--job-timeout", 0.05), log, env)
        for log in slave_logs
    ]
    for slave, log in zip(slaves, slave_logs, strict=True):
        assert wait_exit(slave, 120, log) == 0, tail(log)  # a dead worker stops its slave with exit code 1
        assert "internal error" not in log.read_text(), tail(log)
    assert wait_exit(master, 30, mlog) == 1, tail(mlog)  # 1: jobs failed for good
    starts = collections.Counter(handled(record))
    slow, fast = range(0, N, 2), range(1, N, 2)
    assert {i: starts[i] for i in fast} == dict.fromkeys(fast, 1)
    assert {i: starts[i] for i in slow} == dict.fromkeys(slow, MAX_RETRIES + 1), "runs per timed-out job"
    entries = [json.loads(line) for line in failures.read_text().splitlines()]
    assert sorted(e["position"] for e in entries) == list(slow)
    assert {e["position"]: e["attempts"] for e in entries} == dict.fromkeys(slow, MAX_RETRIES + 1)
    assert {e["type"] for e in entries} == {"JobTimeout"}
