"""A HELLO that arrives late from a connection the slave already gave up starts no new incarnation.

Found by the simulation (tests/sim, seed 18770 with --no-size-check; seed
27641 with --no-size-check --no-job-timeouts in tests/sim/regressions.py).  A slave's HELLO got no
answer in time; the Lazy Pirate client sent it again on its next connection,
was welcomed, and went to work.  Then the first copy arrived: the master
took it for a new incarnation of that slave - a new token, its batches taken
back, its queue forgotten.  The slave, still working with the old token,
held jobs it had not started, which the master no longer knew of: a pause
was answered "every slave settled" and jobs then started on the paused run
(and every request of the slave was answered RESET, its jobs run again).
A HELLO from an older connection than the newest one the slave used is now
ignored, like a late REQUEST: what it asks for came on the newer connection.
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


def test_a_late_hello_from_the_old_connection_changes_nothing(harness):
    hello = protocol.hello("s", "host", 1, 1, 2500, beat="s-beat", conn="s")
    # The first copy, on s.1, is late; the retry on s.2 is welcomed.
    kind, welcome, _ = harness.send(b"s.2", hello)
    assert kind == protocol.WELCOME
    run, token = welcome["run"], welcome["token"]
    kind, header, jobs = harness.send(b"s.2", protocol.report("s", run, token, 1, 3, [], []))
    assert kind == protocol.JOBS and len(jobs) == 3
    harness.send(b"ctl", protocol.control_request("pause", None, 10_000))
    # s got the batch and started one job: two wait.  Now the late first HELLO arrives.
    harness.send(b"s.1", hello)
    harness.tick(0.01)
    settled = [a for a in pause_answers(harness) if a.get("unsettled_slaves") == 0]
    assert settled == [], "s still holds jobs it has not started: no answer may say every slave settled"
    # And s, still working under its token, is still known: its next request is no RESET.
    queue = [[header["batch"], 1, 3]]
    kind, _, _ = harness.send(b"s.2", protocol.report("s", run, token, 2, 0, [], [], queue=queue)) or (None,)
    assert kind != protocol.RESET


def test_a_hello_on_a_newer_connection_is_a_new_incarnation(harness):
    hello = protocol.hello("s", "host", 1, 1, 2500, beat="s-beat", conn="s")
    _, first, _ = harness.send(b"s.1", hello)
    harness.send(b"s.1", protocol.report("s", first["run"], first["token"], 1, 3, [], []))
    kind, again, _ = harness.send(b"s.2", hello)  # a RESET made it say hello again, on a new connection
    assert kind == protocol.WELCOME and again["token"] != first["token"]
