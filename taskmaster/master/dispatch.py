"""Handing out jobs: batches for requests, parked requests, recalls.

A request that asks for jobs gets one batch at once if there is one.  If not,
it is *parked*: the master answers it as soon as jobs come (from the filler,
from a slave giving some back, from a lease that ran out), or NO_JOBS once it
waited long enough.  And when there is none because other slaves hold jobs
they have not started, the slave holding the most is asked to give half of
them back (a *recall*), so that no slave sits idle while another hoards.

The batch size follows the window: a slave gets at most its share of the
jobs the master may hold, so that all of them stay busy.  The pace of
handing out is that of the master's live settings: none while paused,
--rate's tokens while throttled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from taskmaster.master.shutdown import Phase
from taskmaster.master.window import SMALL_JOB_BYTES
from taskmaster.wire import protocol

if TYPE_CHECKING:
    from taskmaster.master.endpoint import Send
    from taskmaster.master.ledger import Ledger
    from taskmaster.master.pace import Pace
    from taskmaster.master.registry import SlaveRecord, SlaveRegistry
    from taskmaster.master.shutdown import Shutdown
    from taskmaster.master.source import JobSource

MAX_BATCH = 20000  # jobs in one reply, at most
# A request that finds no job to hand out waits for one this long at most.  A
# slave still holding jobs gets its answer soon, because while its request
# waits it cannot acknowledge the jobs it finishes - and those may be what
# holds the window (--size) shut for everyone.
PARK_HOLDING_SECONDS = 0.02
PARK_IDLE_SECONDS = 1.0


class Dispatcher:
    """Hands out the ledger's jobs to the registry's slaves, as the pace and the shutdown allow, through `send`."""

    def __init__(
        self, ledger: Ledger, registry: SlaveRegistry, source: JobSource, pace: Pace, shutdown: Shutdown, send: Send
    ) -> None:
        self.ledger = ledger
        self.registry = registry
        self.source = source  # for the jobs that cannot be pickled
        self.pace = pace
        self.shutdown = shutdown
        self.send = send
        self.parked: dict[str, tuple[float, int]] = {}  # slave id -> (when to answer anyway, jobs it wants)
        self.job_bytes = 0.0  # pickled size of a job, on average over recent batches

    def answer(self, slave: SlaveRecord, want: int, now: float, reported_failures: bool = False) -> None:
        """Answer a request for `want` jobs: a batch, NO_JOBS (or QUIT), or park it.

        A request that reported failures and gets no jobs is answered at
        once: more failures may wait behind those (a report carries a bounded
        share of them), and unlike acknowledgements they cannot come while
        the request is parked - a stopping run would wait for them.
        """
        running = self.shutdown.running
        # This request supersedes any earlier one of the slave still parked (the
        # same request, retried on a new connection): answered once, here.
        self.parked.pop(slave.id, None)
        if self.shutdown.phase is Phase.CLOSING or want == 0:
            self.answer_idle(slave)
        elif not running and reported_failures:
            self.answer_idle(slave)
        elif not running or not self.dispatch(slave, want, now):
            # Stopping, nothing more is handed out: every request waits its
            # longest (finished jobs still come in ACKs meanwhile), or slaves
            # would ask again at once for the whole --grace.
            idle_park = min(PARK_IDLE_SECONDS, slave.timeout_ms / 3000)
            holding = running and self.registry.held(slave)
            park = PARK_HOLDING_SECONDS if holding else idle_park
            self.parked[slave.id] = (now + park, want)

    def forget(self, slave_id: str) -> None:
        """`slave_id` left or was lost: its parked request needs no answer."""
        self.parked.pop(slave_id, None)

    def dispatch(self, slave: SlaveRecord, want: int, now: float) -> bool:
        """Send `slave` a batch of up to `want` jobs; False when there is none.

        When there is none and `slave` has nothing waiting either, the slave
        with the largest backlog is asked to give half of it back: its answer
        puts those jobs in the queue, and a parked request takes them.
        """
        live = self.registry.live_count() or 1
        n = max(1, min(want, MAX_BATCH, self.ledger.limit // (2 * live)))
        n = self.pace.allowance(n, now)
        if not n:
            return False  # paused, or too few tokens yet: the request waits, parked
        jobs, ranges = self.ledger.take(n, slave.id, alone=live == 1)
        if not jobs:
            if not self.registry.unstarted(slave):
                self.recall(slave, now)
            return False
        try:
            payload = protocol.pickle_jobs(jobs)
        except Exception:
            jobs, ranges = self.source.cut_at_unpicklable(jobs, ranges)
            if not jobs:
                return False
            payload = protocol.pickle_jobs(jobs)
        self.pace.took(len(jobs))
        per_job = len(payload) / len(jobs)
        self.job_bytes = 0.9 * self.job_bytes + 0.1 * per_job if self.job_bytes else per_job
        self.ledger.stretch(self.job_bytes <= SMALL_JOB_BYTES)
        batch_id = self.registry.hand_out(slave, ranges)
        self.registry.handed(slave, batch_id)
        self.send(slave.identity, protocol.jobs(batch_id, ranges, payload))
        return True

    def recall(self, thief: SlaveRecord, now: float) -> None:
        """`thief` found nothing: ask the slave with the largest backlog for half of it."""
        found = self.registry.recall_from(thief, now)
        if found is not None:
            victim, n = found
            assert victim.beat_identity is not None
            self.send(victim.beat_identity, protocol.recall(n))

    def _backlog(self, slave_id: str) -> int:
        slave = self.registry.get(slave_id)
        return self.registry.unstarted(slave) if slave is not None else 0

    def answer_idle(self, slave: SlaveRecord) -> None:
        """Reply to a slave that gets no jobs now: QUIT when the run is over."""
        if self.shutdown.phase is Phase.CLOSING:
            self.registry.told_to_quit(slave)
            self.send(slave.identity, protocol.quit_(self.shutdown.quit_reason()))
        else:
            self.send(slave.identity, protocol.no_jobs())

    def serve_parked(self, now: float) -> None:
        """Hand jobs to parked requests, the slave with the fewest jobs waiting first; answer those parked too long.

        Fewest first: jobs a slave gave back on another's behalf (a recall)
        go to the slave that ran dry, not back to the one that gave them, if
        its own request for more is parked too.
        """
        parked = list(self.parked.items())
        if len(parked) > 1:
            parked.sort(key=lambda item: self._backlog(item[0]))
        for slave_id, (deadline, want) in parked:
            slave = self.registry.get(slave_id)
            if slave is None:
                del self.parked[slave_id]
                continue
            if self.shutdown.running and self.dispatch(slave, want, now):
                del self.parked[slave_id]
            elif self.shutdown.phase is Phase.CLOSING or now >= deadline:
                del self.parked[slave_id]
                self.answer_idle(slave)
