"""What slaves report, recorded: acknowledgements, failures, jobs given back.

A slave's word counts only for jobs the master handed to that slave: an
acknowledgement or a failure of any other job is a malformed message,
counted and ignored (``Master.bad``), so a confused or hostile peer cannot
resolve jobs it never had.  ``Reports`` records into the ledger, the
registry and the failures file, and returns what it found (``Findings``)
for the master to act on: it calls nothing above it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from taskmaster.wire import protocol

if TYPE_CHECKING:
    from taskmaster.master.failures_file import FailedJobs
    from taskmaster.master.ledger import Ledger
    from taskmaster.master.pace import Pace
    from taskmaster.master.registry import SlaveRecord, SlaveRegistry

log = logging.getLogger("taskmaster.master")


@dataclass
class Findings:
    """What a report showed that the master must act on."""

    bad: list[str] = field(default_factory=list)  # why parts of it were refused: malformed, counted and logged
    disk_errors: list[str] = field(default_factory=list)  # failed jobs that could not be recorded: stop now
    failures: bool = False  # it reported failures: --max-failures may be exceeded


class Reports:
    def __init__(self, ledger: Ledger, registry: SlaveRegistry, pace: Pace, failed_jobs: FailedJobs) -> None:
        self.ledger = ledger
        self.registry = registry
        self.pace = pace
        self.failed_jobs = failed_jobs

    def take_back(self, slave: SlaveRecord, cuts: list[tuple[int, int]]) -> None:
        """Jobs `slave` will not start after all: back to the queue, for whoever asks next."""
        for batch_id, keep in cuts:
            n = self.registry.give_back(slave, batch_id, keep)
            if n:
                self.pace.refund(n)  # never started: they do not count against --rate
                log.debug("slave %s gave back %d jobs of batch %d", slave.id, n, batch_id)

    def record(self, slave: SlaveRecord, msg: protocol.Report | protocol.Ack) -> Findings:
        """Record a report's acknowledgements and failures, only for jobs handed to this slave."""
        found = Findings()
        self.record_acks(slave, msg.acks, found)
        self.record_failures(slave, msg.failures, found)
        return found

    def record_failures(self, slave: SlaveRecord, failures: list[protocol.Failure], found: Findings) -> None:
        """Retry or record each failed job; a failure reported again (an ACK's, in the next request) counts once."""
        for failure in failures:
            batch = slave.batches.get(failure.batch)
            if batch is None and failure.batch <= self.registry.next_batch:
                continue  # a batch whose jobs are all resolved already: reported before
            if batch is None or not batch.covers([(failure.position, failure.position + 1)]):
                found.bad.append(f"slave {slave.id} reported a failure of a job it was not handed")
                continue
            if failure.position in batch.retrying:
                continue  # the same attempt, reported again: counted once
            try:
                self.failed_jobs.failed(self.ledger, failure, slave.id)
            except OSError as exc:
                found.disk_errors.append(
                    f"cannot record a failed job in {self.failed_jobs.file.path}: {exc.strerror or exc}"
                )
                continue
            if self.ledger.is_pending(failure.position):
                self.registry.failed_here(slave, failure.batch, failure.position)
        found.failures = found.failures or bool(failures)

    def record_acks(self, slave: SlaveRecord, acks: list[tuple[int, list[tuple[int, int]]]], found: Findings) -> None:
        """Jobs `slave` finished: resolved in the ledger, settled in its batches."""
        for batch_id, ranges in acks:
            batch = slave.batches.get(batch_id)
            if batch is None and batch_id <= self.registry.next_batch:
                continue  # a batch whose jobs are all resolved already: nothing to learn
            if batch is None or not batch.covers(ranges):
                found.bad.append(f"slave {slave.id} acknowledged jobs it was not handed (batch {batch_id})")
                continue
            self.registry.acknowledged(slave, batch_id, ranges)
