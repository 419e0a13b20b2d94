"""A request the slave sent again on a new connection, whose first copy arrives late from the old one.

A Lazy Pirate retry closes the socket whose request got no answer and sends
the same request (same seq) on a fresh one.  Bytes already in the old TCP
connection's send buffer can still reach the master after a network cut
heals, after the retry did.  The master answered the retry with jobs the
slave now runs; the late copy looks like "the same request again, the answer
was lost", so the master used to take that batch back and lease another one -
sent to the dead connection.  The slave never got it, its heartbeats kept the
lease alive, and the run waited for ever (tests/e2e/test_multihost.py saw it
stuck at 4998 of 5000).  A request from a connection older than the newest
that slave used is now ignored: everything in it comes again on the newer
one.
"""

from __future__ import annotations

import pytest
from inprocess import join, ranged, report

from taskmaster.wire import protocol

N = 40


@pytest.fixture
def harness(tmp_path):
    h = ranged(tmp_path, N)
    yield h
    h.close()


def test_a_late_copy_from_the_old_connection_changes_nothing(harness):
    welcome = join(harness, "s")
    request = report(welcome, "s", 1, 10)
    # The retry, on connection 2, arrives first and is answered with jobs.
    kind, header, jobs = harness.send(b"s.2", request)
    assert kind == protocol.JOBS and jobs
    batch, positions = header["batch"], header["positions"]
    # Then the first copy, from connection 1, which the slave has closed.
    late = harness.send(b"s.1", request)
    assert late is None, "no answer to a connection the slave gave up"
    # The slave runs what it got and acknowledges it on connection 2; then it asks for the rest.
    done = [(batch, positions)]
    seq = 2
    for _ in range(20):
        before = len(harness.endpoint.replies(b"s.2"))
        harness.send(b"s.2", report(welcome, "s", seq, 10, done))
        seq += 1
        for _ in range(50):  # a request the master cannot serve yet waits (parked) for the filler
            if len(harness.endpoint.replies(b"s.2")) > before:
                break
            harness.fill()
            harness.tick(0.01)
        kind, header, jobs = harness.endpoint.last(b"s.2")
        if kind != protocol.JOBS or not jobs:
            break
        done = [(header["batch"], header["positions"])]
    assert harness.master.ledger.finished == N, "every job finished, none leased to a connection nobody reads"


def test_the_retry_itself_still_takes_back_a_lost_answer(harness):
    welcome = join(harness, "s")
    request = report(welcome, "s", 1, 10)
    kind, first, _ = harness.send(b"s.1", request)  # answered, but the answer is lost on the way
    assert kind == protocol.JOBS
    kind, again, _ = harness.send(b"s.2", request)  # the same request on the next connection
    assert kind == protocol.JOBS
    slave = harness.master.registry.get("s")
    assert slave.batches[first["batch"]].expired, "the lost answer's batch went back to the queue"
    assert not slave.batches[again["batch"]].expired
