"""Stopping the liveness thread leaves no file descriptor behind, however long it takes to end."""

from __future__ import annotations

import os
import time

import pytest
from gevent import monkey

from taskmaster.slave.heartbeat import HeartbeatThread

_allocate_lock = monkey.get_original("_thread", "allocate_lock")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.timeout(30)
def test_a_stop_that_gives_up_waiting_still_closes_the_wake_pipe(tmp_path):
    entered, release = _allocate_lock(), _allocate_lock()
    entered.acquire()
    release.acquire()

    def slow_step() -> None:  # the thread's step takes longer than stop() waits
        if entered.locked():
            entered.release()
            release.acquire()

    before = open_fds()
    beat = HeartbeatThread(f"ipc://{tmp_path}/nobody-listens", "slave-1", watchdog=slow_step)
    beat.start()
    try:
        assert entered.acquire(True, 10), "the thread never ran a step"
        beat.stop(wait=0.05)  # gives up: the thread is still in its step
    finally:
        release.release()
    assert wait_until(lambda: open_fds() == before, 10), f"{open_fds() - before} descriptors left open"
    beat.stop()  # again, after the thread ended: nothing to do, nothing closed twice
    assert open_fds() == before


@pytest.mark.timeout(30)
def test_a_stop_in_time_closes_everything(tmp_path):
    before = open_fds()
    beat = HeartbeatThread(f"ipc://{tmp_path}/nobody-listens", "slave-1")
    beat.start()
    beat.stop()
    assert open_fds() == before
