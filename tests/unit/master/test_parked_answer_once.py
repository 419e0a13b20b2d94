"""A request is answered once: never again from the parked list after a retry or a new HELLO was answered.

Found by the simulation (tests/sim, seed in tests/sim/regressions.py).  A
REQUEST of slave S was parked (no job to hand out); jobs came back from
another slave; S's Lazy Pirate retry of the same request, on a new
connection, was answered with batch B1 - and the next tick answered the
parked entry too, with B2.  S resent the request once more: the master took
back B2 (the "same request again") and B1 stayed leased to S, which never
had it, while S's heartbeats kept that lease alive.  The run never ended.
Likewise a HELLO left a parked request of the slave's old incarnation in
place, and the next tick sent the new one jobs it never asked for.
"""

from __future__ import annotations

import pytest
from inprocess import Harness, join, ranged, report

from taskmaster.wire import protocol

N = 6


@pytest.fixture
def harness(tmp_path):
    h = ranged(tmp_path, N)
    yield h
    h.close()


def ask(h: Harness, identity: bytes, frames: list[bytes]):
    """Send a request; its answer, also one that waits (parked) for a tick."""
    before = len(h.endpoint.replies(identity))
    h.send(identity, frames)
    for _ in range(200):
        if len(h.endpoint.replies(identity)) > before:
            return h.endpoint.replies(identity)[before]
        h.fill()
        h.tick(0.01)
    raise AssertionError("no answer")


def jobs_sent(h: Harness, identity: bytes) -> list[dict]:
    return [header for kind, header, jobs in h.endpoint.replies(identity) if kind == protocol.JOBS and jobs]


def test_a_retry_answered_leaves_no_parked_answer_and_the_run_ends(harness):
    a, s = join(harness, "a"), join(harness, "s")
    kind, _, got = harness.send(b"a.1", report(a, "a", 1, N))
    assert kind == protocol.JOBS and len(got) == N  # every job is with a
    request = report(s, "s", 1, 3)
    assert harness.send(b"s.1", request) is None  # nothing to hand out: parked
    harness.send(b"a.1", report(a, "a", 2, 0, leaving=True))  # a leaves: its jobs come back
    kind, _, _ = harness.send(b"s.2", request)  # s's retry of the same request, on a new connection
    assert kind == protocol.JOBS
    harness.tick(0.001)
    assert len(jobs_sent(harness, b"s.2")) == 1, "the retry was answered once, not again from the parked list"
    # Its answers never reached s: it asks once more on a third connection, and works from there.
    seq, reply = 1, ask(harness, b"s.3", request)
    while reply[0] == protocol.JOBS and reply[2]:
        seq += 1
        done = [(reply[1]["batch"], reply[1]["positions"])]
        reply = ask(harness, b"s.3", report(s, "s", seq, 3, done))
    assert harness.master.ledger.finished == N, "every job finished: none left leased to s, which never had it"
    assert harness.end().code == 0


def test_a_new_hello_forgets_the_parked_request_of_the_old_incarnation(harness):
    a, s = join(harness, "a"), join(harness, "s")
    harness.send(b"a.1", report(a, "a", 1, N))
    assert harness.send(b"s.1", report(s, "s", 1, 3)) is None  # parked
    join(harness, "s")  # s starts over (a RESET, a restart): a new incarnation under the same id
    harness.send(b"a.1", report(a, "a", 2, 0, leaving=True))  # jobs come back
    harness.tick(0.001)
    kinds = [kind for kind, _, _ in harness.endpoint.replies(b"s.1")]
    assert kinds[-1] == protocol.WELCOME, f"nothing after the WELCOME until s asks: {kinds}"
