"""A pause is not answered "settled" on a GIVEBACK older than the slave's last REQUEST.

Found by the simulation (tests/sim; seeds 673 and 973 in
tests/sim/regressions.py).  The master answered a REQUEST with batch B;
tm-ctl paused; the slave's liveness thread gave back everything it held
not started - before B reached it - and its GIVEBACK, on the liveness
connection, arrived after the slave's next REQUEST, which listed B as not
started.  The master took the GIVEBACK's queue (empty) for the slave's
latest word, counted it settled and answered the pause: then B's jobs
started on a paused run.
"""

from __future__ import annotations

import pytest
from inprocess import pause_answers, ranged

from taskmaster.wire import protocol

N = 20


@pytest.fixture
def harness(tmp_path):
    h = ranged(tmp_path, N)
    yield h
    h.close()


def test_a_give_back_older_than_the_last_request_does_not_settle_a_pause(harness):
    frames = protocol.hello("s", "host", 1, 1, 2500, beat="s-beat", conn="s")
    kind, welcome, _ = harness.send(b"s.1", frames)
    run, token = welcome["run"], welcome["token"]
    kind, header, jobs = harness.send(b"s.1", protocol.report("s", run, token, 1, 3, [], []))
    assert kind == protocol.JOBS and len(jobs) == 3
    batch = header["batch"]
    harness.send(b"ctl", protocol.control_request("pause", None, 10_000))
    assert pause_answers(harness) == [], "s holds jobs it has not started: the pause waits"
    # s received the batch and started its first job; its request says so (2 not started).
    harness.send(b"s.1", protocol.report("s", run, token, 2, 0, [], [], queue=[[batch, 1, 3]]))
    # Then the give-back its liveness thread made before the batch reached it: nothing to give, nothing waiting.
    harness.send(b"s-beat", protocol.give_back("s", run, token, [], []))
    harness.tick(0.01)
    settled = [a for a in pause_answers(harness) if a.get("unsettled_slaves") == 0]
    assert settled == [], "two jobs of s are not started: no answer may say every slave settled"
    # Asked again, s gives them back: now the pause is settled.
    harness.tick(0.1)
    harness.send(b"s-beat", protocol.give_back("s", run, token, [[batch, 1]], []))
    harness.tick(0.01)
    assert [a["unsettled_slaves"] for a in pause_answers(harness)] == [0]
