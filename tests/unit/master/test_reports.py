"""The report handling on its own: no master, no socket - a ledger, a registry, a pace and a failures file.

``Reports`` records what a slave reports - acknowledgements, failures, jobs
given back - only for jobs handed to that slave, and returns what it found
(``Findings``: malformed parts, failures that could not be written, whether
there were failures) instead of acting on it.
"""

from __future__ import annotations

import json

from taskmaster.master.failures_file import FailedJobs
from taskmaster.master.ledger import Ledger
from taskmaster.master.pace import Pace
from taskmaster.master.registry import SlaveRegistry
from taskmaster.master.reports import Findings, Reports
from taskmaster.wire import protocol


class Books:
    """What the report handling works with: 20 jobs (0..19) pulled, none handed out yet."""

    def __init__(self, tmp_path, max_retries: int = 1, rate: float | None = None, failures_path=None) -> None:
        self.ledger = Ledger(100, stretch=1)
        self.ledger.add([f"job{i}" for i in range(20)])
        self.registry = SlaveRegistry(self.ledger, lease_timeout=30)
        self.pace = Pace(rate, 0.0)
        self.failures_path = failures_path or tmp_path / "run.failures.jsonl"
        self.failed_jobs = FailedJobs(str(self.failures_path), max_retries)
        self.reports = Reports(self.ledger, self.registry, self.pace, self.failed_jobs)

    def join(self, name: str):
        return self.registry.join(name, "host", 1, 4, 3000, name.encode(), now=0.0)

    def hand(self, slave, n: int) -> tuple[int, list[list[int]]]:
        """A batch of `n` jobs handed to `slave`, as the dispatcher hands it: its id and positions."""
        _, ranges = self.ledger.take(n, slave.id, alone=len(self.registry.slaves) == 1)
        return self.registry.hand_out(slave, ranges), ranges

    def ack(self, slave, acks) -> Findings:
        return self.reports.record(slave, protocol.Ack(slave.id, "run", "token", list(acks), []))

    def fail(self, slave, batch: int, position: int) -> Findings:
        failure = protocol.Failure(batch, position, "ValueError", "bad row", "Traceback ...")
        return self.reports.record(slave, protocol.Ack(slave.id, "run", "token", [], [failure]))

    def recorded(self) -> list[int]:
        """The positions the failures file holds."""
        if not self.failures_path.exists():
            return []
        return [json.loads(line)["position"] for line in self.failures_path.read_text().splitlines()]


def test_acknowledged_jobs_are_resolved_and_their_batch_settled(tmp_path):
    books = Books(tmp_path)
    a = books.join("a")
    batch, ranges = books.hand(a, 5)
    found = books.ack(a, [(batch, [(0, 3)])])
    assert found == Findings()
    assert books.ledger.finished == 3 and a.finished == 3
    assert batch in a.batches  # two of its jobs are still running
    books.ack(a, [(batch, [(3, 5)])])
    assert books.ledger.finished == 5 and a.finished == 5
    assert batch not in a.batches


def test_an_acknowledgement_repeated_counts_once(tmp_path):
    books = Books(tmp_path)
    a = books.join("a")
    batch, _ = books.hand(a, 5)
    books.ack(a, [(batch, [(0, 2)])])
    assert books.ack(a, [(batch, [(0, 2)])]) == Findings()  # its batch still open
    assert books.ledger.finished == 2 and a.finished == 2
    books.ack(a, [(batch, [(2, 5)])])
    assert books.ack(a, [(batch, [(0, 5)])]) == Findings()  # its batch settled and forgotten: reported before
    assert books.ledger.finished == 5 and a.finished == 5


def test_an_acknowledgement_of_jobs_not_handed_to_the_slave_is_refused(tmp_path):
    books = Books(tmp_path)
    a, b = books.join("a"), books.join("b")
    batch, _ = books.hand(a, 5)
    outside = books.ack(a, [(batch, [(0, 8)])])  # more than its batch holds
    assert outside.bad == ["slave a acknowledged jobs it was not handed (batch 1)"]
    never = books.ack(a, [(batch + 10, [(0, 1)])])  # a batch never handed out
    assert never.bad == ["slave a acknowledged jobs it was not handed (batch 11)"]
    books.ack(b, [(batch, [(0, 5)])])  # another slave's batch: it resolves nothing
    assert books.ledger.finished == 0 and books.registry.in_flight() == 5


def test_a_failure_with_retries_left_is_retried_once_however_often_reported(tmp_path):
    books = Books(tmp_path, max_retries=1)
    a = books.join("a")
    batch, _ = books.hand(a, 5)
    found = books.fail(a, batch, 2)
    assert found.failures and not found.bad and not found.disk_errors
    assert books.failed_jobs.retried == 1 and books.ledger.is_pending(2)
    assert books.registry.held(a) == 4  # the failed job is no longer this slave's work
    books.fail(a, batch, 2)  # the same attempt, reported again (an ACK's, then its request's)
    assert books.failed_jobs.retried == 1 and books.ledger.attempts[2] == 1
    assert books.recorded() == []


def test_a_failure_for_good_is_written_once_before_it_counts(tmp_path):
    books = Books(tmp_path, max_retries=0)
    a = books.join("a")
    batch, _ = books.hand(a, 5)
    books.fail(a, batch, 1)
    assert books.ledger.failed == 1 and not books.ledger.is_pending(1)
    assert books.recorded() == [1]
    books.fail(a, batch, 1)  # reported again
    assert books.ledger.failed == 1 and books.recorded() == [1]


def test_a_failure_of_a_job_not_handed_to_the_slave_is_refused(tmp_path):
    books = Books(tmp_path, max_retries=0)
    a, b = books.join("a"), books.join("b")
    batch, _ = books.hand(a, 5)
    found = books.fail(a, batch, 12)  # not in its batch
    assert found.bad == ["slave a reported a failure of a job it was not handed"]
    found = books.fail(a, batch + 10, 0)  # a batch never handed out
    assert found.bad == ["slave a reported a failure of a job it was not handed"]
    books.fail(b, batch, 0)  # another slave's batch: ignored
    assert books.ledger.failed == 0 and books.recorded() == []


def test_a_failure_that_cannot_be_written_is_found_and_the_job_stays_unresolved(tmp_path):
    books = Books(tmp_path, max_retries=0, failures_path=tmp_path / "missing-dir" / "run.failures.jsonl")
    a = books.join("a")
    batch, _ = books.hand(a, 5)
    found = books.fail(a, batch, 3)
    assert len(found.disk_errors) == 1
    assert found.disk_errors[0].startswith(f"cannot record a failed job in {books.failures_path}: ")
    assert books.ledger.is_pending(3) and books.ledger.failed == 0
    assert books.registry.held(a) == 5  # still counted in flight: nothing was resolved


def test_jobs_given_back_go_back_to_the_queue_and_their_tokens_are_refunded(tmp_path):
    books = Books(tmp_path, rate=1000.0)
    a = books.join("a")
    books.pace.took(books.pace.allowance(5000, 0.0))  # the bucket emptied by earlier hand-outs
    batch, _ = books.hand(a, 10)
    books.reports.take_back(a, [(batch, 4)])  # it keeps the first 4
    assert books.registry.held(a) == 4
    assert books.pace.allowance(5000, 0.0) == 6  # never started: they do not count against --rate
    jobs, _ = books.ledger.take(6, "b", alone=False)
    assert jobs == [f"job{i}" for i in range(4, 10)]  # back in front of the fresh ones


def test_a_give_back_repeated_or_of_an_unknown_batch_changes_nothing(tmp_path):
    books = Books(tmp_path, rate=1000.0)
    a = books.join("a")
    books.pace.took(books.pace.allowance(5000, 0.0))
    batch, _ = books.hand(a, 10)
    books.reports.take_back(a, [(batch, 4)])
    books.reports.take_back(a, [(batch, 4), (batch + 5, 0)])
    assert books.registry.held(a) == 4
    assert books.pace.allowance(5000, 0.0) == 6  # refunded once


def test_a_late_acknowledgement_after_the_lease_ran_out_still_resolves_its_jobs(tmp_path):
    books = Books(tmp_path)
    a, b = books.join("a"), books.join("b")
    batch, _ = books.hand(a, 5)
    books.registry.seen(b, 100.0)
    assert books.registry.expire(100.0) == [a]  # silent past its lease: its jobs are requeued
    assert books.ack(a, [(batch, [(0, 5)])]) == Findings()  # it comes back and says they are done
    assert books.ledger.finished == 5
    jobs, _ = books.ledger.take(10, "b", alone=False)
    assert jobs == [f"job{i}" for i in range(5, 15)]  # the requeued ones are not handed out again
