"""A halted run, in-process: what counts as in flight, and how soon a stopping master hears of the last jobs.

The clock is the harness's: the waits are simulated time, not elapsed time.
"""

from __future__ import annotations

from inprocess import Harness

from taskmaster.failure_limit import FailureLimit
from taskmaster.master.outcome import EndReason
from taskmaster.master.shutdown import Phase
from taskmaster.wire import protocol


def failure(batch: int, position: int) -> protocol.Failure:
    return protocol.Failure(batch, position, "ValueError", "no", "Traceback ...")


def halted_run(tmp_path):
    """Slave a holds batch 1 (jobs 0-9): job 0 failed there and waits for a retry, job 1 failed for good
    on b, which halted the run (--max-failures 0), jobs 2-8 are done, job 9 still runs on a."""
    h = Harness(tmp_path, lambda **kw: iter(range(100)), max_retries=1, max_failures=FailureLimit(count=0), grace=600)
    h.fill()
    a, b = h.hello("a"), h.hello("b")
    kind, header, _ = h.request("a", a, 10)
    assert kind == protocol.JOBS and header["positions"] == [[0, 10]]
    batch = header["batch"]
    h.request("a", a, 0, acks=[(batch, [[2, 9]])], failures=[failure(batch, 0), failure(batch, 1)])
    kind, header, _ = h.request("b", b, 2)  # the two retries
    assert kind == protocol.JOBS and header["positions"] == [[0, 2]]
    h.request("b", b, 0, acks=[(header["batch"], [[0, 1]])], failures=[failure(header["batch"], 1)])
    assert h.master.pace.halted and h.master.phase is Phase.STOPPING
    return h, a, batch


def test_a_job_waiting_for_a_retry_is_not_in_flight(tmp_path):
    h, a, batch = halted_run(tmp_path)
    try:
        # Job 0 was done by b after all; job 9 runs on a: one job in flight, not two.
        assert h.master.registry.in_flight() == 1
        h.request("a", a, 0, acks=[(batch, [[9, 10]])])
        assert h.master.registry.in_flight() == 0
        outcome = h.end()  # well before --grace 600: nothing runs
        assert h.master.ended is EndReason.HALTED and outcome.code == 1
    finally:
        h.close()


def test_a_failure_while_the_request_is_parked_comes_in_an_ack_and_ends_the_halt(tmp_path):
    h, a, batch = halted_run(tmp_path)
    try:
        assert h.request("a", a, 5) is None  # job 9 still runs: the request is parked (stopping)
        # Job 9 fails: the slave says so in an ACK rather than when the parked request is answered.
        h.send(b"a", protocol.ack("a", a["run"], a["token"], [], [failure(batch, 9)]))
        assert h.master.registry.in_flight() == 0
        assert h.tick(0.0) is None and h.master.ended is EndReason.HALTED  # long before the park's second
        # The next report says it again: counted once, and not a malformed message.
        failed = h.master.failed_jobs.retried, h.master.ledger.failed
        h.request("a", a, 0, failures=[failure(batch, 9)])
        assert (h.master.failed_jobs.retried, h.master.ledger.failed) == failed
        assert h.master.bad_messages == 0
    finally:
        h.close()
