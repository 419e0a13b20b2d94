"""The slave in-process, through its seam: its request socket replaced by a link to a master.

``MasterLink`` stands where the slave's ``LazyPirateClient`` would: each
request goes straight into an in-process ``Master`` (``handle``), whose
answer comes back as the reply.  The slave's worker pool runs the jobs in
greenlets as it does in a real slave; its heartbeat thread is replaced by a
stand-in (it would open a socket of its own).
"""

from __future__ import annotations

import signal
import time

import gevent
import pytest
from inprocess import Harness

from taskmaster.master.outcome import EndReason
from taskmaster.slave.core import Slave, SlaveConfig
from taskmaster.wire import protocol

ANSWER_WITHIN = 5.0  # seconds the link waits for the master's answer, as --timeout would


class QuietHeartbeat:
    """The heartbeat thread's stand-in: the master's clock here never runs past a lease."""

    def __init__(self) -> None:
        self.interval, self.token, self.run_id = 10.0, "", ""

    def join_run(self, run_id: str, token: str, interval: float) -> None:
        self.run_id, self.token, self.interval = run_id, token, interval

    def report_problems(self) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class MasterLink:
    """The slave's request socket, wired to an in-process master."""

    def __init__(self, harness: Harness, identity: bytes = b"slave") -> None:
        self.h = harness
        self.identity = identity
        self.round_trip = 0.0
        self.handshake_failures = 0
        self.kinds: list[bytes] = []  # what the slave sent, in order
        self.seen = 0  # replies already taken from the endpoint

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def unreachable(self, what: str) -> str:
        return what

    def _deliver(self, frames: list[bytes]) -> None:
        self.kinds.append(frames[0])
        self.h.now = time.monotonic()
        self.h.master.handle([self.identity, *frames], self.h.now)

    def _take(self) -> list[bytes] | None:
        sent = self.h.endpoint.sent
        while self.seen < len(sent):
            identity, frames = sent[self.seen]
            self.seen += 1
            if identity == self.identity:
                return frames
        return None

    def send(self, frames: list[bytes]) -> bool:
        self._deliver(frames)
        return True

    def ask(self, frames: list[bytes], waiter) -> list[bytes] | None:
        self._deliver(frames)
        deadline = time.monotonic() + ANSWER_WITHIN
        while True:
            reply = self._take()
            if reply is not None:
                return reply
            if time.monotonic() > deadline or waiter.while_waiting(frames[0]):
                return None
            gevent.sleep(0.001)
            self.h.tick(time.monotonic() - self.h.now)

    def unprompted(self) -> list[bytes] | None:
        self.h.tick(time.monotonic() - self.h.now)
        return self._take()

    def wait_for_answer(self, seconds: float) -> list[bytes] | None:
        deadline = time.monotonic() + seconds
        while (reply := self._take()) is None and time.monotonic() < deadline:
            gevent.sleep(0.001)
        return reply


class ScriptedLink(MasterLink):
    """A request socket whose master answers from a script (None: no answer at all)."""

    def __init__(self, script: list[list[bytes] | None]) -> None:
        self.script = list(script)
        self.round_trip = 0.0
        self.handshake_failures = 0
        self.kinds = []

    def ask(self, frames: list[bytes], waiter) -> list[bytes] | None:
        self.kinds.append(frames[0])
        return self.script.pop(0) if self.script else None

    def send(self, frames: list[bytes]) -> bool:
        return True

    def unprompted(self) -> list[bytes] | None:
        return None

    def wait_for_answer(self, seconds: float) -> list[bytes] | None:
        return None


@pytest.fixture
def harness(tmp_path):
    made: list[Harness] = []

    def make(n: int, **config) -> Harness:
        def get_jobs(last=0, **kwargs):
            yield from range(n)

        h = Harness(tmp_path, get_jobs, **config)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


def make_slave(handle_job, client, concurrency: int = 4) -> Slave:
    slave = Slave(handle_job, SlaveConfig(concurrency=concurrency, progress=False, grace=5.0), client=client)
    slave.heartbeat = QuietHeartbeat()  # type: ignore[assignment]
    return slave


def end(h: Harness):
    """Let the master linger to its end, on the real clock."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        gevent.sleep(0.01)
        outcome = h.tick(time.monotonic() - h.now)
        if outcome is not None:
            return outcome
    raise AssertionError(f"the master did not end: {h.master.phase}")


def test_a_slave_runs_every_job_once_and_quits_when_the_master_says_so(harness):
    h = harness(200, size=50)
    h.fill()
    handled: list[int] = []
    link = MasterLink(h)
    slave = make_slave(handled.append, link)
    assert slave.run() == 0
    assert sorted(handled) == list(range(200))  # each once
    assert link.kinds[0] == protocol.HELLO and protocol.REQUEST in link.kinds
    assert slave.quit_reason == "the run is over"
    assert link.kinds[-1] == protocol.BYE  # told to quit, it said goodbye...
    assert h.master.registry.live_count() == 0
    outcome = h.tick(0.0)  # ... so the master need not linger for it
    assert outcome is not None
    assert outcome.code == 0 and outcome.finished == 200 and h.master.ended is EndReason.COMPLETE


def test_a_failing_job_is_reported_to_the_master_with_its_error(harness):
    h = harness(20, size=50, max_retries=0)
    h.fill()

    def handle_job(job):
        if job % 5 == 0:
            raise ValueError(f"job {job} is bad")

    slave = make_slave(handle_job, MasterLink(h))
    assert slave.run() == 0
    outcome = end(h)
    assert (outcome.finished, outcome.failed, outcome.code) == (16, 4, 1)
    recorded = (h.master.failed_jobs.file.read())
    assert sorted(r["position"] for r in recorded) == [0, 5, 10, 15]
    assert all("is bad" in r["message"] for r in recorded)


def test_a_stopped_slave_finishes_its_running_jobs_says_bye_and_loses_nothing(harness):
    h = harness(1000, size=200)
    h.fill()
    handled: list[int] = []
    slave: Slave

    def handle_job(job):
        gevent.sleep(0.001)
        handled.append(job)
        if len(handled) == 30:
            slave._on_signal(signal.SIGTERM)

    link = MasterLink(h)
    slave = make_slave(handle_job, link)
    assert slave.run() == 128 + signal.SIGTERM
    assert link.kinds[-1] == protocol.BYE
    assert len(handled) == len(set(handled)) < 1000
    # Every job it finished is counted; every other is back in the master's hands.
    assert h.master.finished_overall() == len(handled)
    assert h.master.registry.in_flight() == 0


def test_a_reset_makes_the_slave_join_the_new_run(harness):
    welcome = protocol.welcome("a" * 32, "t" * 32, 30.0, 10.0)
    again = protocol.welcome("b" * 32, "u" * 32, 30.0, 10.0)
    link = ScriptedLink([welcome, protocol.reset("new run"), again, protocol.quit_("the run is over")])
    slave = make_slave(lambda job: None, link)
    assert slave.run() == 0
    assert link.kinds == [protocol.HELLO, protocol.REQUEST, protocol.HELLO, protocol.REQUEST]
    assert slave.run_id == "b" * 32 and slave.token == "u" * 32


def test_a_slave_whose_rejoin_after_a_reset_fails_exits_1_and_says_why(harness):
    welcome = protocol.welcome("a" * 32, "t" * 32, 30.0, 10.0)
    link = ScriptedLink([welcome, protocol.reset("new run"), None])
    slave = make_slave(lambda job: None, link)
    assert slave.run() == 1
    assert "no master answered" in slave.error


def test_a_slave_that_hears_no_master_exits_1_and_says_where_it_looked():
    slave = make_slave(lambda job: None, ScriptedLink([None]))
    assert slave.run() == 1
    assert "no master answered at tcp://127.0.0.1:3050" in slave.error


def test_a_slave_with_jobs_at_tens_a_second_reports_for_several_jobs_at_once(harness):
    # At 80 jobs a second (two greenlets, 25 ms each) a slave used to report
    # after nearly every job, and each report costs master and slave CPU;
    # REPORT_SPACING makes it one report for several jobs, without losing or
    # repeating any.  With REPORT_SPACING = 0 this slave sent 123 reports.
    h = harness(240, size=1000)
    h.fill()
    handled: list[int] = []

    def handle(job: int) -> None:
        gevent.sleep(0.025)
        handled.append(job)

    link = MasterLink(h)
    slave = make_slave(handle, link, concurrency=2)
    assert slave.run() == 0
    assert sorted(handled) == list(range(240))
    reports = sum(kind in (protocol.REQUEST, protocol.ACK) for kind in link.kinds)
    assert reports < 240 / 3, f"{reports} reports for 240 jobs"
    outcome = end(h)
    assert outcome.code == 0 and outcome.finished == 240
