"""A job source that dies of something other than an Exception stops the run; it does not hang it.

An Exception raised by get_jobs is the user's error, reported as such.  A
BaseException that is not one (a library's own "stop" signal, a stray
GeneratorExit...) used to kill the filler greenlet silently: no more jobs
came, the run never ended, and the master hung for ever.
"""

from __future__ import annotations

import pytest
from conftest import handled, start_logged, tail, tcp_address, text, tm, wait_exit, wait_listening, write_module

CRASHING_SOURCE = """
import os

RECORD = os.environ["TM_RECORD"]


class Abandon(BaseException):
    '''Not an Exception: what `except Exception` lets through.'''


def get_jobs(last=0):
    for i in range(int(last), 10):
        yield i
    raise Abandon("the source gave up")


def handle_job(i):
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, f"{i}\\n".encode())
    os.close(fd)
"""


@pytest.mark.timeout(120)
def test_a_crashed_filler_stops_the_master_with_a_clear_error(procs, tmp_path):
    module = write_module(tmp_path, "crashsource", CRASHING_SOURCE)
    record = tmp_path / "handled.txt"
    state = tmp_path / "run.state"
    env = {"TM_RECORD": str(record)}
    address = tcp_address()
    mlog, slog = tmp_path / "master.log", tmp_path / "slave.log"
    master_argv = tm("master", module, "--address", address, "--no-progress", "--state-file", state)
    master = start_logged(procs, master_argv, mlog, env)
    wait_listening(master, mlog)
    slave = start_logged(procs, tm("slave", module, "--address", address, "--no-progress"), slog, env)
    assert wait_exit(master, 60, mlog) == 1, tail(mlog)  # the hang detector: a deadline
    assert wait_exit(slave, 30, slog) == 0, tail(slog)
    log = text(mlog)
    assert "tm-master: error: the job source stopped on Abandon: the source gave up" in log, tail(log)
    assert "run the same command to resume" in log, tail(log)
    assert "Traceback" in log and 'raise Abandon("the source gave up")' in log, tail(log)
    assert sorted(handled(record)) == list(range(10))  # what came before the crash ran...
    assert state.exists()  # ... and is checkpointed: the same command resumes after it
