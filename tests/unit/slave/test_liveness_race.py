"""The slave's liveness thread against a pool that changes under it, at full rate.

The liveness thread (``heartbeat``) is a real OS thread: it answers the
master's RECALL by cutting jobs off the pool's queue and listing what still
waits, and looks for jobs past --job-timeout, while the gevent thread adds
batches, claims jobs and drops used-up batches.  Here a real ROUTER on
ipc:// sends RECALLs as fast as the thread answers them while this thread's
greenlets add batches and run jobs without pause, with the interpreter
switching threads as often as it can.  The thread must still answer at the
end, and must never have reported an error: an exception there used to end it,
and with it the slave's heartbeats, its answers to RECALL and the watchdog.
"""

from __future__ import annotations

import logging
import signal
import sys
import time

import gevent
import pytest
import zmq
from gevent import monkey

from taskmaster.slave.heartbeat import HeartbeatThread
from taskmaster.slave.pool import WATCHDOG_SIGNAL, LocalBatch, WorkerPool
from taskmaster.wire import protocol

STRESS_SECONDS = 4.0
BEAT_ID = b"beat-stress"
_start_thread = monkey.get_original("_thread", "start_new_thread")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")


class Master:
    """The master's side of the liveness connection, in a real thread: RECALL after RECALL."""

    def __init__(self, address: str) -> None:
        self.context = zmq.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(address)
        self.answers = 0  # GIVEBACKs received
        self.beats = 0
        self.stop = False
        self.done = _allocate_lock()

    def start(self) -> None:
        self.done.acquire()
        _start_thread(self._recall_all_the_time, ())

    def _recall_all_the_time(self) -> None:
        try:
            while not self.stop:
                self.receive(0)
                if self.beats:  # the thread's connection is known to the ROUTER: RECALLs reach it
                    self.router.send_multipart([BEAT_ID, *protocol.recall(3)])
        finally:
            self.done.release()

    def receive(self, timeout_ms: int) -> None:
        if self.router.poll(timeout_ms):
            while True:
                try:
                    identity, kind, _ = self.router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    return
                if kind == protocol.GIVEBACK:
                    self.answers += 1
                elif kind == protocol.HEARTBEAT:
                    self.beats += 1

    def answered_one_more(self, timeout: float) -> bool:
        """Send one RECALL: does a GIVEBACK come back within `timeout`?"""
        before = self.answers
        self.router.send_multipart([BEAT_ID, *protocol.recall(1)])
        deadline = time.monotonic() + timeout
        while self.answers == before and time.monotonic() < deadline:
            self.receive(50)
        return self.answers > before

    def close(self) -> None:
        self.stop = True
        if self.done.acquire(True, 10):
            self.router.close(0)
            self.context.term()


@pytest.fixture
def fast_switching():
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the OS threads take turns as often as possible: races show at once
    yield
    sys.setswitchinterval(previous)


@pytest.mark.timeout(60)
def test_the_liveness_thread_keeps_answering_while_the_pool_changes_at_full_rate(tmp_path, caplog, fast_switching):
    previous_handler = signal.getsignal(WATCHDOG_SIGNAL)
    master = Master(f"ipc://{tmp_path}/beat")
    # A job timeout, so that the watchdog reads the watched jobs at every step too.
    pool = WorkerPool(lambda job: None, concurrency=4, job_timeout=60.0)
    beat = HeartbeatThread(master.router.getsockopt_string(zmq.LAST_ENDPOINT), "slave-1",
                           watchdog=pool.interrupt_overdue_job, give_back=pool.give_back, routing_id=BEAT_ID)
    beat.join_run("run-1", "token-1", 0.01)
    caplog.set_level(logging.WARNING)
    batch_id = 0
    try:
        beat.start()
        pool.start()
        master.start()
        deadline = time.monotonic() + STRESS_SECONDS
        while time.monotonic() < deadline:
            while len(pool.todo) < 64:  # a long queue: listing it takes many steps
                batch_id += 1
                pool.add(LocalBatch(batch_id, "run-1", [[0, 4]], [0, 1, 2, 3]))
            gevent.sleep(0)  # the workers claim, run and drop batches
            if batch_id % 1000 < 64:
                pool.forget()  # a RESET now and then: the whole queue goes at once
        master.stop = True
        assert master.done.acquire(True, 10)
        master.done.release()
        recalls_answered = master.answers
        assert master.answered_one_more(5.0), (
            f"the liveness thread stopped answering RECALLs ({recalls_answered} answered before); "
            f"logged: {caplog.text[-3000:]}"
        )
    finally:
        pool.kill()
        beat.stop()
        master.close()
        signal.signal(WATCHDOG_SIGNAL, previous_handler)
    beat.report_problems()  # as the slave's loop does: the thread itself never logs
    assert recalls_answered > 100, "too few RECALLs answered to have raced anything"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, caplog.text[-3000:]
    print(f"{recalls_answered} RECALLs answered, {batch_id} batches, {master.beats} heartbeats")


@pytest.mark.timeout(30)
def test_an_exception_in_the_liveness_thread_is_reported_once_and_it_goes_on(tmp_path, caplog):
    master = Master(f"ipc://{tmp_path}/beat")
    calls: list[int] = []

    def give_back_badly(want: int, upto: int | None = None):
        calls.append(want)
        if len(calls) <= 2:
            raise RuntimeError("a bug in give_back")
        return [], []

    beat = HeartbeatThread(master.router.getsockopt_string(zmq.LAST_ENDPOINT), "slave-1",
                           give_back=give_back_badly, routing_id=BEAT_ID)
    beat.join_run("run-1", "token-1", 0.01)
    caplog.set_level(logging.WARNING)
    try:
        beat.start()
        deadline = time.monotonic() + 10
        while not master.beats and time.monotonic() < deadline:
            master.receive(50)
        assert master.beats, "no heartbeat came"
        assert not master.answered_one_more(0.5)  # the bug: no answer to these two
        assert not master.answered_one_more(0.5)
        assert master.answered_one_more(5.0), "the liveness thread died of the exception"
        beats = master.beats
        deadline = time.monotonic() + 5
        while master.beats == beats and time.monotonic() < deadline:
            master.receive(50)
        assert master.beats > beats, "no more heartbeats"
    finally:
        beat.stop()
        master.close()
    beat.report_problems()  # as the slave's loop does
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors  # once, though it happened twice
    assert "internal error in the liveness thread" in errors[0]
    assert "RuntimeError: a bug in give_back" in errors[0] and "Traceback" in errors[0]
