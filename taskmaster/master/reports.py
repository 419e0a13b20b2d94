"""What slaves report, recorded: acknowledgements, failures, jobs given back.

A slave's word counts only for jobs the master handed to that slave: an
acknowledgement or a failure of any other job is a malformed message,
counted and ignored (``Master.bad``), so a confused or hostile peer cannot
resolve jobs it never had.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from taskmaster.wire import protocol

if TYPE_CHECKING:
    from taskmaster.master.core import Master
    from taskmaster.master.registry import SlaveRecord

log = logging.getLogger("taskmaster.master")


def take_back(m: Master, slave: SlaveRecord, cuts: list[tuple[int, int]]) -> None:
    """Jobs `slave` will not start after all: back to the queue, for whoever asks next."""
    for batch_id, keep in cuts:
        n = m.registry.give_back(slave, batch_id, keep)
        if n:
            m.pace.refund(n)  # never started: they do not count against --rate
            log.debug("slave %s gave back %d jobs of batch %d", slave.id, n, batch_id)


def record(m: Master, slave: SlaveRecord, msg: protocol.Report | protocol.Ack) -> None:
    """Record a report's acknowledgements and failures, only for jobs handed to this slave."""
    record_acks(m, slave, msg.acks)
    record_failures(m, slave, msg.failures)


def record_failures(m: Master, slave: SlaveRecord, failures: list[protocol.Failure]) -> None:
    """Retry or record each failed job; a failure reported again (an ACK's, in the next request) counts once."""
    for failure in failures:
        batch = slave.batches.get(failure.batch)
        if batch is None and failure.batch <= m.registry.next_batch:
            continue  # a batch whose jobs are all resolved already: reported before
        if batch is None or not batch.covers([(failure.position, failure.position + 1)]):
            m.bad(None, f"slave {slave.id} reported a failure of a job it was not handed")
            continue
        if failure.position in batch.retrying:
            continue  # the same attempt, reported again: counted once
        try:
            m.failed_jobs.failed(m.ledger, failure, slave.id)
        except OSError as exc:
            m.stop_for_disk(f"cannot record a failed job in {m.config.failures_path}: {exc.strerror or exc}")
            continue
        if m.ledger.is_pending(failure.position):
            m.registry.failed_here(slave, failure.batch, failure.position)
    if failures:
        m.control.check_failures()


def record_acks(m: Master, slave: SlaveRecord, acks: list[tuple[int, list[tuple[int, int]]]]) -> None:
    """Jobs `slave` finished: resolved in the ledger, settled in its batches."""
    for batch_id, ranges in acks:
        batch = slave.batches.get(batch_id)
        if batch is None and batch_id <= m.registry.next_batch:
            continue  # a batch whose jobs are all resolved already: nothing to learn
        if batch is None or not batch.covers(ranges):
            m.bad(None, f"slave {slave.id} acknowledged jobs it was not handed (batch {batch_id})")
            continue
        slave.finished += m.ledger.mark_done(ranges)
        m.registry.settle(slave, batch_id)
