"""A pause is not answered "settled" while a slave holds a batch resolved elsewhere, not started.

Found by the simulation (tests/sim, seed 47737 with --no-size-check
--no-job-timeouts, in tests/sim/regressions.py).  Jobs handed out twice (a
lease ran out, they went to another slave) were finished by their first
holder after all: the master forgot the second holder's batch, all of whose
jobs were resolved - but that slave had the batch, not started, and would
still start it.  The master counted it settled and answered a pause "every
slave settled"; then a handler ran on the paused run.
"""

from __future__ import annotations

import pytest
from inprocess import join, pause_answers, ranged

from taskmaster.wire import protocol

N = 8  # a and s each get the first 4: the other 4 keep the run going


@pytest.fixture
def harness(tmp_path):
    h = ranged(tmp_path, N, lease_timeout=1.0)
    yield h
    h.close()


def run_and_token(h, name: str) -> tuple[str, str]:
    welcome = join(h, name, concurrency=1)
    return welcome["run"], welcome["token"]

def test_a_batch_resolved_elsewhere_but_held_not_started_keeps_a_pause_waiting(harness):
    a_run, a_token = run_and_token(harness, "a")
    kind, a_header, _ = harness.send(b"a.1", protocol.report("a", a_run, a_token, 1, 4, [], []))
    assert kind == protocol.JOBS
    harness.tick(2.0)  # a is silent past its lease: its jobs go back to the queue
    s_run, s_token = run_and_token(harness, "s")
    kind, s_header, jobs = harness.send(b"s.1", protocol.report("s", s_run, s_token, 1, 4, [], []))
    assert kind == protocol.JOBS and s_header["positions"] == a_header["positions"]  # the same jobs, now s's
    # a comes back and reports them all finished: s's batch is all resolved.
    harness.send(b"a.1", protocol.report("a", a_run, a_token, 2, 0, [[a_header["batch"], a_header["positions"]]], []))
    harness.tick(0.2)  # the master's housekeeping forgets batches all of whose jobs are resolved
    harness.send(b"ctl", protocol.control_request("pause", None, 10_000))
    harness.tick(0.01)
    settled = [a for a in pause_answers(harness) if a.get("unsettled_slaves") == 0]
    assert settled == [], "s holds a batch it has not started (and would start it): no answer may say settled"
    # s gives that batch back, and says so in its next request: now the pause is settled.
    harness.send(b"s-beat", protocol.give_back("s", s_run, s_token, [[s_header["batch"], 0]], []))
    harness.send(b"s.1", protocol.report("s", s_run, s_token, 2, 0, [], [], cuts=[[s_header["batch"], 0]]))
    harness.tick(0.01)
    assert [a["unsettled_slaves"] for a in pause_answers(harness)] == [0]
