"""The slaves a master knows, the batches each was handed, and their leases.

A batch stays recorded under the slave it was handed to until every job in
it is resolved, also after its lease ran out and its jobs were requeued: a
slave that comes back late may still acknowledge them, and an
acknowledgement is only accepted for jobs that were handed to that slave.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field

from taskmaster.ledger import Ledger

log = logging.getLogger("taskmaster.master")

MAX_SLAVES = 10_000  # a flood of HELLOs cannot grow the master without bound
FORGET_AFTER_LEASES = 10  # a departed slave with nothing left is forgotten after this many leases


@dataclass
class Batch:
    id: int
    ranges: list[list[int]]
    expired: bool = False  # its lease ran out and its jobs were requeued


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

    @property
    def live(self) -> bool:
        return not (self.lost or self.gone)


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
            log.info("slave %s joined (host %s, pid %d, concurrency %d)", slave_id, host, pid, concurrency)
        self.slaves[slave_id] = slave
        return slave

    def seen(self, slave: SlaveRecord, now: float) -> None:
        slave.last_seen = now
        if slave.lost:
            slave.lost = False
            log.info("slave %s is back", slave.id)

    def live_count(self) -> int:
        return sum(1 for s in self.slaves.values() if s.live)

    def hand_out(self, slave: SlaveRecord, ranges: list[list[int]]) -> int:
        """Record a batch handed to `slave`; its id."""
        self.next_batch += 1
        slave.batches[self.next_batch] = Batch(self.next_batch, ranges)
        return self.next_batch

    def settle(self, slave: SlaveRecord, batch_id: int) -> None:
        """Forget a batch once all its jobs are resolved."""
        batch = slave.batches.get(batch_id)
        if batch is not None and self.ledger.unresolved(batch.ranges) == 0:
            del slave.batches[batch_id]

    def held(self, slave: SlaveRecord) -> int:
        """Unresolved jobs this slave holds under a running lease."""
        return sum(self.ledger.unresolved(b.ranges) for b in slave.batches.values() if not b.expired)

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
