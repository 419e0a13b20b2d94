"""--job-timeout against handlers that swallow it, and a signal that comes just too late; in-process.

JobTimeout is raised again every --job-timeout while the handler swallows
it, by the timer (a handler that yields) and by the watchdog's signal (one
that never yields), so the job ends once the handler lets it through.  And
a signal that lands after the handler returned, before the pool marked the
job done, must not turn the success into a timeout.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import gevent
import pytest

from taskmaster.slave.pool import WATCHDOG_SIGNAL, JobTimeout, LocalBatch, WorkerPool

TIMEOUT = 0.02
GIVE_UP = 2.0  # seconds a test handler waits for a timeout that does not come, then returns


def spin_until_the_signal_raises() -> None:
    """Never yield; past the timeout ask for the watchdog's signal (as the liveness thread would)."""
    began = time.monotonic()
    while time.monotonic() - began < GIVE_UP:
        if time.monotonic() - began > 2 * TIMEOUT:
            os.kill(os.getpid(), WATCHDOG_SIGNAL)  # Python runs the handler before the next bytecodes


def sleep_until_the_timer_raises() -> None:
    gevent.sleep(GIVE_UP)  # yields: the timer throws into it


@pytest.fixture
def pool():
    previous = signal.getsignal(WATCHDOG_SIGNAL)
    pool = WorkerPool(lambda job: None, concurrency=1, job_timeout=TIMEOUT)
    signal.signal(WATCHDOG_SIGNAL, pool._on_watchdog_signal)  # as start() does; the test is the worker
    yield pool
    signal.signal(WATCHDOG_SIGNAL, previous)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("wait", [spin_until_the_signal_raises, sleep_until_the_timer_raises], ids=["signal", "timer"])
def test_a_handler_that_swallows_the_timeout_gets_it_again_until_it_lets_it_through(pool, wait):
    swallowed: list[BaseException] = []

    def stubborn(job):
        for _ in range(2):
            try:
                wait()
            except BaseException as exc:  # noqa: BLE001 - what a stubborn handler does
                swallowed.append(exc)
        wait()  # the third time it lets it through

    pool.handle_job = stubborn
    batch = LocalBatch(1, "run", [[0, 1]], [0])
    pool._run_with_timeout(batch, 0)
    assert [type(e) for e in swallowed] == [JobTimeout, JobTimeout]
    assert [(f.position, f.type) for _, f in pool.failures] == [(0, "JobTimeout")]
    assert bytes(batch.finished) == b"\x00"
    assert (pool.failed, pool.resolved, pool.running) == (1, 1, 0)


def test_job_timeout_is_not_an_exception():
    """So that a handler's ``except Exception:`` cannot swallow it."""
    assert issubclass(JobTimeout, BaseException) and not issubclass(JobTimeout, Exception)


def test_a_watchdog_signal_between_the_handlers_return_and_done_is_not_a_timeout(pool):
    """The signal's handler runs at the first line of the pool's code after the handler returned."""

    def overdue_then_done(job):
        time.sleep(2 * TIMEOUT)  # overdue, but returns by itself (and never yields: the timer stays quiet)

    returned: list[bool] = []
    delivered: list[str] = []

    def trace(frame, event, arg):
        if frame.f_code is overdue_then_done.__code__:
            return on_return
        if frame.f_code is WorkerPool._run_with_timeout.__code__:
            return in_the_pool
        return None

    def on_return(frame, event, arg):
        if event == "return":
            returned.append(True)
        return on_return

    def in_the_pool(frame, event, arg):
        if event == "line" and returned and not delivered:
            delivered.append(f"line {frame.f_lineno}")
            pool._on_watchdog_signal(WATCHDOG_SIGNAL, frame)  # exactly what the signal would do here
        return in_the_pool

    pool.handle_job = overdue_then_done
    batch = LocalBatch(1, "run", [[0, 1]], [0])
    sys.settrace(trace)
    try:
        pool._run_with_timeout(batch, 0)
    finally:
        sys.settrace(None)
    assert delivered, "the signal was never delivered"
    assert pool.failures == [], f"a success recorded as {pool.failures[0][1].type}"
    assert bytes(batch.finished) == b"\x01"
    assert (pool.failed, pool.resolved, pool.running) == (0, 1, 0)
