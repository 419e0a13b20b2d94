"""The --job-timeout watchdog's signal, in-process and deterministic.

The signal handler must raise JobTimeout into the overdue handler, once,
and never into the pool's own code: here further signals are sent exactly
where they used to do harm - while the failure is being recorded (a logging
filter runs inside ``log.error``, outside the handlers' own error guard) and
after the handler has returned.
"""

from __future__ import annotations

import logging
import os
import signal
import time

import pytest

from taskmaster.slave.pool import WATCHDOG_SIGNAL, LocalBatch, WorkerPool

TIMEOUT = 0.01


def signal_self() -> None:
    os.kill(os.getpid(), WATCHDOG_SIGNAL)  # Python runs the handler before the next bytecode


def spin_until_interrupted(job) -> None:
    began = time.monotonic()
    while True:  # never yields; past the timeout, asks for the watchdog's signal itself
        if time.monotonic() - began > 2 * TIMEOUT:
            signal_self()


class SignalWhileRecording(logging.Filter):
    """More watchdog signals in the middle of the failure's recording."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "failed" in record.msg:
            for _ in range(3):
                self.sent += 1
                signal_self()
        return True


@pytest.fixture
def pool():
    previous = signal.getsignal(WATCHDOG_SIGNAL)
    pool = WorkerPool(spin_until_interrupted, concurrency=1, job_timeout=TIMEOUT)
    signal.signal(WATCHDOG_SIGNAL, pool._on_watchdog_signal)  # as start() does; the test is the worker
    yield pool
    signal.signal(WATCHDOG_SIGNAL, previous)


def test_signals_during_the_recording_neither_count_twice_nor_escape(pool):
    noisy = SignalWhileRecording()
    logger = logging.getLogger("taskmaster.slave")
    logger.addFilter(noisy)
    try:
        batch = LocalBatch(1, "run", [[0, 3]], [0, 1, 2])
        for index in range(3):
            pool._run_with_timeout(batch, index)  # used to raise JobTimeout out of here: a dead worker
    finally:
        logger.removeFilter(noisy)
    assert noisy.sent == 9
    assert [f.position for _, f in pool.failures] == [0, 1, 2]  # each once
    assert {f.type for _, f in pool.failures} == {"JobTimeout"}
    assert (pool.failed, pool.resolved, pool.running) == (3, 3, 0)
    assert pool.watched == {}


def test_a_signal_after_the_handler_returned_changes_nothing(pool):
    def overdue_then_done(job):
        time.sleep(2 * TIMEOUT)  # overdue, but never interrupted: returns by itself

    pool.handle_job = overdue_then_done
    batch = LocalBatch(1, "run", [[0, 1]], [0])
    pool._run_with_timeout(batch, 0)
    signal_self()  # late: its job is over
    assert pool.failures == [] and bytes(batch.finished) == b"\x01"
    assert (pool.resolved, pool.running) == (1, 0)
