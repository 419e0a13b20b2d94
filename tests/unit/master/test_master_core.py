"""The master in-process, through its seam: messages in with ``handle(frames, now)``, time with ``tick(now)``.

The transport is an in-memory stand-in for the ROUTER socket (end-to-end
tests use the real one); the clock is the test's, so leases, grace and
lingering are moved by hand, not waited for.
"""

from __future__ import annotations

import json
import signal

import gevent
import gevent.event
import pytest
from inprocess import Harness

from taskmaster.failure_limit import parse as parse_limit
from taskmaster.master.outcome import EndReason
from taskmaster.master.shutdown import QUIET_SECONDS, Phase
from taskmaster.wire import protocol


@pytest.fixture
def harness(tmp_path):
    made: list[Harness] = []

    def make(get_jobs, **config) -> Harness:
        h = Harness(tmp_path, get_jobs, **config)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def upto(n):
    def get_jobs(last=0, **kwargs):
        yield from range(n)  # every run here starts afresh

    return get_jobs


def positions(ranges) -> list[int]:
    return [p for a, b in ranges for p in range(a, b)]


def test_hello_request_jobs_acks_then_complete_with_the_checkpoint_saying_so(harness, tmp_path):
    h = harness(upto(10), size=100)
    h.fill()
    welcome = h.hello("s1")
    kind, header, jobs = h.request("s1", welcome, want=10)
    assert kind == protocol.JOBS and jobs == list(range(10))
    assert positions(header["positions"]) == list(range(10))
    assert h.master.snapshot()["in_flight"] == 10
    kind, _, _ = h.request("s1", welcome, want=0, acks=[(header["batch"], header["positions"])])
    assert kind == protocol.JOBS and h.master.snapshot()["finished"] == 10  # NO_JOBS is an empty JOBS
    assert h.tick() is None
    assert h.master.phase is Phase.CLOSING and h.master.ended is EndReason.COMPLETE
    assert h.endpoint.last(b"s1")[0] == protocol.QUIT  # told at once, on its request socket
    assert h.master.snapshot()["ended"] == "complete"  # what tm-status --watch reads
    outcome = h.end()
    assert outcome.code == 0 and outcome.finished == 10 and outcome.failed == 0 and outcome.served
    assert outcome.summary.startswith("10 finished, 0 failed")
    saved = json.loads((tmp_path / "run.state").read_text())
    assert saved["complete"] is True and saved["finished"] == 10


def test_a_lost_slaves_jobs_go_to_another_once_its_lease_runs_out(harness):
    h = harness(upto(6), size=100, lease_timeout=5.0)
    h.fill()
    w1 = h.hello("s1")
    _, lost, jobs = h.request("s1", w1, want=6)
    assert jobs == list(range(6))
    w2 = h.hello("s2")
    assert h.request("s2", w2, want=6) is None  # nothing to hand out: parked
    h.tick(1.0)  # within the lease: nothing moves (and s2 hears there is nothing, for now)
    assert h.master.registry.in_flight() == 6 and h.endpoint.last(b"s2")[2] == []
    h.elapse(3.0)
    h.send(b"s2-beat", protocol.heartbeat("s2", w2["run"], w2["token"]))  # s2 is alive
    h.send(b"rogue", protocol.heartbeat("s1", w1["run"], w1["token"]))  # s1's token, not its connection
    h.elapse(2.1)  # s1 silent 6 s
    assert h.master.registry.in_flight() == 0
    assert {r["id"]: r["state"] for r in h.master.registry.rows(h.now)} == {"s1": "lost", "s2": "working"}
    kind, header, jobs = h.request("s2", w2, want=6)
    assert kind == protocol.JOBS and sorted(jobs) == list(range(6))  # s1's jobs, all of them
    h.request("s2", w2, want=0, acks=[(header["batch"], header["positions"])])
    h.tick()
    outcome = h.end()
    assert outcome.code == 0 and outcome.finished == 6


def test_a_master_that_stalls_longer_than_the_lease_does_not_write_off_its_slaves(harness):
    """The heartbeats of a stall wait unread in the socket: the slaves' silence meanwhile proves nothing."""
    h = harness(upto(6), size=100, lease_timeout=5.0)
    h.fill()
    w1 = h.hello("s1")
    h.request("s1", w1, want=6)
    h.elapse(1.0)
    h.tick(40.0)  # the master's loop was held up for 40 s (a slow disk, SIGSTOP)
    assert h.master.registry.in_flight() == 6
    assert {r["id"]: r["state"] for r in h.master.registry.rows(h.now)} == {"s1": "working"}
    h.elapse(6.0)  # but a slave silent for a lease while the master listens is lost
    assert {r["id"]: r["state"] for r in h.master.registry.rows(h.now)} == {"s1": "lost"}
    assert h.master.registry.in_flight() == 0


def test_a_slave_reports_a_queue_only_of_batches_it_holds(harness):
    """A queue naming batches the slave was never handed is not kept: what the master stores is bounded."""
    h = harness(upto(6), size=100)
    h.fill()
    w1 = h.hello("s1")
    _, header, _ = h.request("s1", w1, want=2)
    queue = [[header["batch"], 0, 2]] + [[10_000 + i, 0, 5] for i in range(5000)]
    h.send(b"s1", protocol.report("s1", w1["run"], w1["token"], 99, 0, [], [], False, queue, []))
    assert h.master.registry.get("s1").queue == [(header["batch"], 0, 2)]


def test_a_parked_request_is_served_what_it_asked_for_when_jobs_arrive(harness):
    gate = gevent.event.Event()

    def get_jobs(last=0, **kwargs):
        gate.wait()
        yield from range(20)

    h = harness(get_jobs, size=100)
    welcome = h.hello("s1")
    assert h.request("s1", welcome, want=3) is None  # nothing yet: parked, no answer
    h.tick()
    assert h.endpoint.last(b"s1")[0] == protocol.WELCOME
    gate.set()
    h.fill()
    h.tick()
    kind, header, jobs = h.endpoint.last(b"s1")
    assert kind == protocol.JOBS and jobs == [0, 1, 2]  # its want, not the most a batch may hold


def test_a_parked_request_gets_no_jobs_once_it_waited_long_enough(harness):
    gate = gevent.event.Event()

    def get_jobs(last=0, **kwargs):
        gate.wait()
        yield from range(1)

    h = harness(get_jobs, size=100)
    welcome = h.hello("s1")
    assert h.request("s1", welcome, want=3) is None
    h.tick(2.0)
    kind, _, jobs = h.endpoint.last(b"s1")
    assert kind == protocol.JOBS and jobs == []
    gate.set()


def test_stopping_waits_for_the_jobs_in_flight_then_ends_interrupted(harness):
    h = harness(upto(100), size=100, grace=10.0)
    h.fill()
    welcome = h.hello("s1")
    _, header, jobs = h.request("s1", welcome, want=4)
    assert jobs == [0, 1, 2, 3]
    h.master.stop(signal.SIGTERM, h.now)
    assert h.master.phase is Phase.STOPPING
    assert h.master.snapshot()["state"] == "draining"
    # No new jobs while stopping; the request waits (no ping-pong of NO_JOBS for the whole --grace).
    assert h.request("s1", welcome, want=4) is None
    assert h.tick(0.5) is None and h.master.phase is Phase.STOPPING  # 4 jobs in flight: wait
    h.send(b"s1", protocol.ack("s1", welcome["run"], welcome["token"], [(header["batch"], header["positions"])]))
    h.tick()
    assert h.master.phase is Phase.CLOSING and h.master.ended is EndReason.INTERRUPTED
    kind, header, _ = h.endpoint.last(b"s1")
    assert kind == protocol.QUIT and header["reason"] == protocol.QUIT_STOPPING  # the waiting request's answer
    assert h.master.snapshot()["state"] == "finished"
    outcome = h.end()
    assert outcome.code == 128 + signal.SIGTERM
    assert outcome.summary.startswith("interrupted: 4 finished, run the same command to resume")


def test_stopping_ends_when_the_grace_runs_out_or_at_a_second_signal(harness):
    h = harness(upto(100), size=100, grace=10.0)
    h.fill()
    welcome = h.hello("s1")
    h.request("s1", welcome, want=4)
    h.master.stop(signal.SIGINT, h.now)
    assert h.tick(9.0) is None and h.master.phase is Phase.STOPPING
    h.tick(2.0)  # past --grace with the jobs still out
    assert h.master.phase is Phase.CLOSING and h.master.ended is EndReason.INTERRUPTED
    assert h.end().code == 128 + signal.SIGINT

    again = harness(upto(100), size=100, grace=1000.0)
    again.fill()
    w = again.hello("s1")
    again.request("s1", w, want=4)
    again.master.stop(signal.SIGTERM, again.now)
    again.master.stop(signal.SIGTERM, again.now)  # again: now
    again.tick()
    assert again.master.ended is EndReason.INTERRUPTED


def test_past_max_failures_the_run_halts_and_says_why(harness):
    h = harness(upto(100), size=100, max_retries=0, max_failures=parse_limit("2"))
    h.fill()
    welcome = h.hello("s1")
    _, header, jobs = h.request("s1", welcome, want=5)
    failures = [protocol.Failure(header["batch"], p, "ValueError", "bad", "Traceback...") for p in (0, 1, 2)]
    h.request("s1", welcome, want=0, acks=[(header["batch"], [[3, 5]])], failures=failures)
    assert h.master.pace.halted and h.master.phase in (Phase.STOPPING, Phase.CLOSING)
    h.tick()
    assert h.master.ended is EndReason.HALTED
    outcome = h.end()
    assert outcome.code == 1 and outcome.failed == 3 and outcome.finished == 2
    assert outcome.summary.startswith("halted: ") and "run the same command to continue" in outcome.summary


def test_closing_answers_quit_to_everyone_and_lingers_while_stragglers_talk(harness):
    h = harness(upto(2), size=100)
    h.fill()
    welcome = h.hello("s1")
    _, header, _ = h.request("s1", welcome, want=2)
    h.request("s1", welcome, want=0, acks=[(header["batch"], header["positions"])])
    h.tick()
    assert h.master.phase is Phase.CLOSING
    kind, _, _ = h.send(b"late", protocol.hello("late", "host", 2, 4, 2500))
    assert kind == protocol.QUIT  # a slave that comes now hears the run is over
    assert h.request("s1", welcome, want=5)[0] == protocol.QUIT
    assert h.tick(QUIET_SECONDS / 2) is None  # a straggler just spoke: stay a moment
    outcome = h.tick(QUIET_SECONDS * 2)
    assert outcome is not None and outcome.code == 0 and outcome.finished == 2


def test_closing_ends_without_a_quiet_moment_once_every_slave_said_bye(harness):
    h = harness(upto(2), size=100)
    h.fill()
    first, second = h.hello("s1"), h.hello("s2")
    _, header, _ = h.request("s1", first, want=2)
    h.request("s1", first, want=0, acks=[(header["batch"], header["positions"])])
    h.tick()
    assert h.master.phase is Phase.CLOSING
    assert h.request("s1", first, want=0, leaving=True)[0] == protocol.QUIT  # "goodbye"
    assert h.tick(QUIET_SECONDS / 10) is None  # s2 has not said goodbye: it may still speak
    assert h.request("s2", second, want=0, leaving=True)[0] == protocol.QUIT
    outcome = h.tick(QUIET_SECONDS / 10)  # nobody left to hear from: no need to wait
    assert outcome is not None and outcome.code == 0 and outcome.finished == 2


def test_the_master_stays_reachable_until_linger_after_the_start(harness):
    h = harness(upto(1), size=100, linger=3.0)
    h.fill()
    welcome = h.hello("s1")
    _, header, _ = h.request("s1", welcome, want=1)
    h.request("s1", welcome, want=0, acks=[(header["batch"], header["positions"])])
    h.tick()
    assert h.master.phase is Phase.CLOSING
    assert h.tick(1.0) is None and h.tick(1.0) is None  # 2 s after the start: still answering
    assert h.tick(1.5) is not None  # past --linger


def test_a_request_from_another_run_or_with_a_wrong_token_is_reset_and_changes_nothing(harness):
    h = harness(upto(10), size=100)
    h.fill()
    welcome = h.hello("s1")
    assert h.request("s1", {**welcome, "run": "0" * 32}, want=5)[0] == protocol.RESET
    assert h.request("s1", {**welcome, "token": "x" * 32}, want=5)[0] == protocol.RESET
    assert h.master.registry.in_flight() == 0


def test_jobs_given_back_go_to_the_slave_that_ran_dry_before_the_giver_asks_again(harness):
    """A recall's jobs are for the dry slave: the giver's next request, just behind them, gets none."""
    h = harness(upto(10), size=100)
    h.fill()
    w1 = h.hello("s1")
    _, header, jobs = h.request("s1", w1, want=10)
    assert jobs == list(range(10))  # alone: it got everything
    batch = header["batch"]
    w2 = h.hello("s2")
    assert h.request("s2", w2, want=5) is None  # nothing left: parked, and s1 is asked for half
    kind, recall, _ = h.endpoint.last(b"s1-beat")
    assert kind == protocol.RECALL and recall["want"] == 5
    # s1's liveness thread cuts the 5 it has not started (it started 2), and says so...
    h.send(b"s1-beat", protocol.give_back("s1", w1["run"], w1["token"], [[batch, 5]], [[batch, 2, 5]]))
    kind, _, jobs = h.endpoint.last(b"s2")
    assert kind == protocol.JOBS and jobs == [5, 6, 7, 8, 9]  # ...and they went to s2 at once
    # ...before s1's request loop, which has room for more now, asks again.
    h.seqs["s1"] += 1
    frames = protocol.report("s1", w1["run"], w1["token"], h.seqs["s1"], 5, [], [], queue=[[batch, 2, 5]])
    assert h.send(b"s1", frames) is None  # nothing for it: parked (it still has jobs to run)
    assert h.master.registry.in_flight() == 10
