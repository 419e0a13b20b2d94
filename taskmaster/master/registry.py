"""The slaves a master knows, the batches each was handed, and their leases.

The registry owns every ``SlaveRecord``: other modules read records but
never write one; they tell the registry what happened, and only this module
changes a record (tests/unit/master/test_record_owner.py checks it).  What
changes a record: a HELLO (``join``, then ``hello``: where recalls go and
which connections are the slave's), a request (``requested``), any message
(``seen``), a request on a newer connection (``spoke_on``, from admission),
a batch handed out (``hand_out``, and ``handed``: the answer carried it),
jobs reported not started (``note_queue``), acknowledged (``acknowledged``),
failed (``failed_here``) or given back (``give_back``), a recall
(``recall_from``, ``recalled``), QUIT told (``told_to_quit``), BYE
(``leave``), a lease run out (``expire``), and a stall of the master's own
(``excuse``).

A batch stays recorded under the slave it was handed to until every job in
it is resolved, also after its lease ran out and its jobs were requeued: a
slave that comes back late may still acknowledge them, and an
acknowledgement is only accepted for jobs that were handed to that slave.

Jobs handed out but not started can move: when a slave runs dry and the
master has nothing left to hand out, the slave with the largest backlog is
*recalled* (``recall``): its liveness thread cuts jobs it has not started off
the tail of its batches and says where it cut (``give_back``).  The cut jobs
go back to the queue, in front of fresh ones, and the batch keeps only the
jobs before the cut.  The slave cuts under the same lock its workers claim
jobs with, so a job is either started there or given back, never both: no
job runs twice for it and none is left behind.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from taskmaster.master.ledger import Ledger
from taskmaster.wire.ranges import positions_of, within

log = logging.getLogger("taskmaster.master")

MAX_SLAVES = 10_000  # a flood of HELLOs cannot grow the master without bound
FORGET_AFTER_LEASES = 10  # a departed slave with nothing left is forgotten after this many leases
RECALL_AGAIN_SECONDS = 0.05  # a slave asked to give jobs back is not asked again sooner


@dataclass
class Batch:
    id: int
    handed: list[list[int]]  # the positions handed out, in the order of the slave's job list
    size: int  # how many jobs were handed
    keep: int = -1  # the first `keep` jobs are still this slave's; the rest it gave back
    ranges: list[list[int]] = field(default_factory=list)  # positions of those `keep` jobs: what the lease covers
    expired: bool = False  # its lease ran out and its jobs were requeued
    # Jobs whose attempt here failed and that wait for a retry (perhaps
    # elsewhere): no longer this slave's work, though still unresolved.
    retrying: set[int] = field(default_factory=set)
    _starts: tuple[list[list[int]], list[int]] | None = field(default=None, repr=False)  # (ranges, their starts)

    def __post_init__(self) -> None:
        if self.keep < 0:
            self.keep, self.ranges = self.size, self.handed

    def covers(self, inner: list[tuple[int, int]]) -> bool:
        """Are all of `inner`'s positions still this slave's (under its lease or not)?

        The starts of the batch's ranges are found once per version of them,
        not once per acknowledgement: one message may name the same batch
        thousands of times.
        """
        if self._starts is None or self._starts[0] is not self.ranges:
            self._starts = (self.ranges, [a for a, _ in self.ranges])
        return within(inner, self.ranges, self._starts[1])


@dataclass
class SlaveRecord:
    id: str
    host: str
    pid: int
    concurrency: int
    timeout_ms: int
    identity: bytes
    last_seen: float
    batches: dict[int, Batch] = field(default_factory=dict)
    lost: bool = False  # silent past its lease
    gone: bool = False  # said BYE
    finished: int = 0
    told_quit: bool = False
    token: str = field(default_factory=lambda: secrets.token_hex(8))  # proves later messages come from it
    last_seq: int = -1  # the last request answered, and the batch that answer carried
    last_batch: int | None = None
    queue: list[tuple[int, int, int]] = field(default_factory=list)  # (batch, next, end) not started, as reported
    beat_identity: bytes | None = None  # its liveness thread's socket: where recalls go
    conn: bytes = b""  # its request connections are named conn.N (a reconnect takes the next N)
    newest_conn: int = 0  # the highest N a request of it came from: older connections are ones it gave up
    recalled_at: float = -1.0

    @property
    def live(self) -> bool:
        return not (self.lost or self.gone)


def queue_after_give_back(
    before: list[tuple[int, int, int]], reported: list[tuple[int, int, int]], cuts: list[tuple[int, int]]
) -> list[tuple[int, int, int]]:
    """A slave's jobs not started, as a GIVEBACK leaves them: what it reported, and what it could not know of.

    A GIVEBACK comes from the liveness thread, on its own connection: it can
    arrive after a REQUEST the slave sent later, which listed a batch that
    reached the slave only after it gave back.  The GIVEBACK neither cut nor
    lists that batch; it cannot say the batch was started, so its entry stays
    until a request says otherwise (else a pause would count the slave as
    settled while that batch is still to start).
    """
    mentioned = {batch for batch, _, _ in reported} | {batch for batch, _ in cuts}
    return list(reported) + [entry for entry in before if entry[0] not in mentioned]


class SlaveRegistry:
    def __init__(self, ledger: Ledger, lease_timeout: float) -> None:
        self.ledger = ledger
        self.lease_timeout = lease_timeout
        self.slaves: dict[str, SlaveRecord] = {}
        self.next_batch = 0

    def get(self, slave_id: str) -> SlaveRecord | None:
        return self.slaves.get(slave_id)

    def join(
        self, slave_id: str, host: str, pid: int, concurrency: int, timeout_ms: int, identity: bytes, now: float
    ) -> SlaveRecord | None:
        """Register (or re-register) a slave; None when the registry is full."""
        old = self.slaves.get(slave_id)
        if old is None and len(self.slaves) >= MAX_SLAVES:
            return None
        if old is not None:
            # A second hello under one id starts a new incarnation (a retried
            # hello, or an impostor): whatever the old one held goes back.
            self.take_back(old)
        slave = SlaveRecord(slave_id, host, pid, concurrency, timeout_ms, identity, now)
        if old is not None:
            slave.batches, slave.finished = old.batches, old.finished
        else:
            log.info(
                "slave %s joined (host %s, pid %d, concurrency %d)",
                slave_id,
                host,
                pid,
                concurrency,
                extra={
                    "event": "slave_joined",
                    "slave": slave_id,
                    "host": host,
                    "pid": pid,
                    "concurrency": concurrency,
                },
            )
        self.slaves[slave_id] = slave
        return slave

    def seen(self, slave: SlaveRecord, now: float) -> None:
        slave.last_seen = now
        if slave.lost:
            slave.lost = False
            log.info("slave %s is back", slave.id, extra={"event": "slave_back", "slave": slave.id})

    def requested(
        self, slave: SlaveRecord, identity: bytes, seq: int, queue: list[tuple[int, int, int]], now: float
    ) -> None:
        """`slave` sent its request `seq` on connection `identity`, with `queue` not started yet."""
        slave.identity = identity  # the slave's current connection (a Lazy Pirate retry opens a new one)
        self.seen(slave, now)
        if seq == slave.last_seq and slave.last_batch in slave.batches:
            # The same request again: our answer never reached the slave, so
            # the batch in it is nobody's - back to the queue with it.
            self.take_back_batch(slave, slave.last_batch)
        slave.last_seq, slave.last_batch = seq, None
        self.note_queue(slave, queue)

    def hello(self, slave: SlaveRecord, beat_identity: bytes | None, conn: bytes) -> None:
        """`slave` said hello naming its liveness connection (where recalls go) and its request connections."""
        slave.beat_identity = beat_identity
        slave.conn = conn

    def spoke_on(self, slave: SlaveRecord, number: int) -> None:
        """`slave`'s newest request connection is now conn.`number`: older ones it gave up."""
        slave.newest_conn = number

    def handed(self, slave: SlaveRecord, batch_id: int) -> None:
        """The answer to `slave`'s last request carried that batch (see ``requested``: a repeat takes it back)."""
        slave.last_batch = batch_id

    def told_to_quit(self, slave: SlaveRecord) -> None:
        slave.told_quit = True

    def recalled(self, slave: SlaveRecord, now: float) -> None:
        """`slave` was asked to give back jobs it has not started: not again before RECALL_AGAIN_SECONDS."""
        slave.recalled_at = now

    def acknowledged(self, slave: SlaveRecord, batch_id: int, ranges: list[tuple[int, int]]) -> None:
        """`slave` finished those jobs of the batch: the newly resolved count as its own, and the batch may settle."""
        slave.finished += self.ledger.mark_done(ranges)
        self.settle(slave, batch_id)

    def live_count(self) -> int:
        return sum(1 for s in self.slaves.values() if s.live)

    def hand_out(self, slave: SlaveRecord, ranges: list[list[int]]) -> int:
        """Record a batch handed to `slave`; its id."""
        self.next_batch += 1
        size = sum(b - a for a, b in ranges)
        slave.batches[self.next_batch] = Batch(self.next_batch, ranges, size)
        # Not started, as far as we know until its next report (which will
        # cover it: the slave reports only once it has read this answer).
        slave.queue.append((self.next_batch, 0, size))
        return self.next_batch

    def settle(self, slave: SlaveRecord, batch_id: int) -> None:
        """Forget a batch once all its jobs are resolved."""
        batch = slave.batches.get(batch_id)
        if batch is not None and self.ledger.unresolved(batch.ranges) == 0:
            del slave.batches[batch_id]

    def note_queue(self, slave: SlaveRecord, queue: list[tuple[int, int, int]]) -> None:
        """What `slave` says waits unstarted: kept only for batches it holds, so it is bounded by the window."""
        batches = slave.batches
        slave.queue = [entry for entry in queue if entry[0] in batches]

    def excuse(self, seconds: float) -> None:
        """The master did not listen for `seconds` (a stall of its own): no slave's silence meanwhile counts."""
        for slave in self.slaves.values():
            slave.last_seen += seconds

    # ------------------------------------------------- moving unstarted jobs

    def unstarted(self, slave: SlaveRecord) -> int:
        """Jobs `slave` holds and had not started when it last reported (less what it gave back since)."""
        count = 0
        for batch_id, start, end in slave.queue:
            batch = slave.batches.get(batch_id)
            if batch is not None and not batch.expired:
                count += max(0, min(end, batch.keep) - start)
        return count

    def recall_from(self, thief: SlaveRecord, now: float) -> tuple[SlaveRecord, int] | None:
        """The slave to ask for jobs back on behalf of `thief`, and how many: half its backlog.

        Only a slave whose liveness thread has spoken can be asked, and only
        once per RECALL_AGAIN_SECONDS, so one dry slave asking again and
        again does not strip another bare.
        """
        best: SlaveRecord | None = None
        backlog = 0
        for slave in self.slaves.values():
            if slave is thief or not slave.live or slave.beat_identity is None:
                continue
            if now - slave.recalled_at < RECALL_AGAIN_SECONDS:
                continue
            n = self.unstarted(slave)
            if n > backlog:
                best, backlog = slave, n
        if best is None:
            return None
        self.recalled(best, now)
        return best, (backlog + 1) // 2

    def give_back(self, slave: SlaveRecord, batch_id: int, keep: int) -> int:
        """`slave` will run only the first `keep` jobs of the batch: requeue the rest; how many.

        Applying the same cut twice, or a cut of a batch already settled or
        expired, changes nothing.
        """
        batch = slave.batches.get(batch_id)
        if batch is None or batch.expired or not 0 <= keep < batch.keep:
            return 0
        returned = positions_of([(keep, batch.keep)], batch.handed)
        batch.keep = keep
        batch.ranges = positions_of([(0, keep)], batch.handed) if keep else []
        n = self.ledger.requeue(returned)
        self.settle(slave, batch_id)
        return n

    def failed_here(self, slave: SlaveRecord, batch_id: int, position: int) -> None:
        """The attempt of `position` in that batch failed and the job waits for a retry: `slave` is done with it."""
        batch = slave.batches.get(batch_id)
        if batch is not None:
            batch.retrying.add(position)

    def held(self, slave: SlaveRecord) -> int:
        """Jobs this slave holds under a running lease and has not resolved: running, or not started yet.

        Not those whose attempt here failed: they wait in the master's queue
        for a retry, and a run that stops hands out none - counting them
        kept a stopping run waiting for jobs nobody would run, for all its --grace.
        """
        count = 0
        for batch in slave.batches.values():
            if not batch.expired:
                count += self.ledger.unresolved(batch.ranges)
                count -= sum(1 for p in batch.retrying if self.ledger.is_pending(p))
        return count

    def in_flight(self) -> int:
        return sum(self.held(s) for s in self.slaves.values() if s.live)

    def take_back(self, slave: SlaveRecord) -> int:
        """Requeue the unresolved jobs of `slave`; how many."""
        return sum(self.take_back_batch(slave, batch_id) for batch_id in slave.batches)

    def take_back_batch(self, slave: SlaveRecord, batch_id: int) -> int:
        batch = slave.batches[batch_id]
        if batch.expired:
            return 0
        batch.expired = True
        return self.ledger.requeue(batch.ranges)

    def leave(self, slave: SlaveRecord) -> int:
        slave.gone = True
        return self.take_back(slave)

    def expire(self, now: float) -> list[SlaveRecord]:
        """Take back the jobs of slaves silent past their lease; those slaves."""
        expired = []
        for slave in list(self.slaves.values()):
            for batch_id in list(slave.batches):
                self.settle(slave, batch_id)
            silent = now - slave.last_seen
            if slave.live and silent > self.lease_timeout:
                slave.lost = True
                n = self.take_back(slave)
                expired.append(slave)
                log.warning(
                    "slave %s (host %s, pid %d) silent for %.0fs: %d of its jobs go to other slaves",
                    slave.id,
                    slave.host,
                    slave.pid,
                    silent,
                    n,
                    extra={
                        "event": "slave_lost",
                        "slave": slave.id,
                        "host": slave.host,
                        "pid": slave.pid,
                        "requeued": n,
                    },
                )
            if not slave.live and not slave.batches and silent > FORGET_AFTER_LEASES * self.lease_timeout:
                del self.slaves[slave.id]
        return expired

    def rows(self, now: float) -> list[dict]:
        return [
            {
                "id": s.id,
                "host": s.host,
                "pid": s.pid,
                "finished": s.finished,
                "in_flight": self.held(s),
                "last_seen": round(now - s.last_seen, 1),
                "state": "lost" if s.lost else "gone" if s.gone else "working",
            }
            for s in self.slaves.values()
        ]
