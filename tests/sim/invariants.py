"""What must hold after every step of a simulated run, and at its end.

Each check raises ``Violation`` naming the invariant; the world stops there
and prints the command that replays the seed.
"""

from __future__ import annotations

from typing import Any

from taskmaster.master import checkpoint
from taskmaster.master import failures_file as failures
from taskmaster.master.core import Master
from taskmaster.wire.ranges import positions_of

from .jobs import KINDS_STABLE
from .master_host import TARGET

# --size bounds the jobs the master holds (buffered + in flight).  On this
# branch it does not: the window stretches WINDOW_STRETCH x for small jobs
# (taskmaster.dispatch), so this check fails at once on most seeds.  Kept
# on, as the promise stands; turn off (--no-size-check) to look for other bugs.
SIZE_IS_A_BOUND = True
# A batch a live slave holds (jobs not started or running) that its master
# does not count for it: longer than this many leases, a violation.  (The
# master counts a batch from the moment it hands it out, so no message in
# flight excuses it; only a lease lost, which the check leaves out.)
UNCOUNTED_LEASES = 0.0


class Violation(AssertionError):
    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant


def window(m: Master, size_check: bool) -> None:
    """Buffered + in flight never exceeds --size."""
    held = m.ledger.high - m.ledger.low
    if size_check and held > m.config.size:
        span = f"positions {m.ledger.low}..{m.ledger.high}"
        raise Violation("size-bound", f"the master holds {held} jobs ({span}), --size {m.config.size}")


def failed_for_good(path: str) -> set[Any]:
    """The jobs the failures file lists."""
    return {entry["value"] for entry in failures.FailureLog(path).read()}


def state_file(m: Master, world: Any) -> None:
    """The state file lists as resolved only jobs a handler finished or the failures file holds."""
    state = checkpoint.load(m.config.state_path, TARGET, {})
    if state is None or not state.has_anchor:
        return
    start, yielded = m.ledger.start, world.jobs.yielded
    positions = set(range(start, min(state.position, start + len(yielded))))
    for a, b in state.resolved:
        positions.update(range(max(a, start), min(b, start + len(yielded))))
    if not positions:
        return
    resolved = world.jobs.done
    failed = None
    for p in sorted(positions):
        job = yielded[p - start]
        if job in resolved:
            continue
        if failed is None:
            failed = failed_for_good(m.config.failures_path)
        if job not in failed:
            raise Violation(
                "state-file-truth",
                f"the state file counts position {p} (job {job}) as resolved, but no handler finished it "
                "and it is not in the failures file",
            )


def no_start_while_paused(world: Any, slave_name: str) -> None:
    """No job starts on a slave the master counted settled when it answered a pause, until a resume."""
    if world.pause_answered is not None and slave_name in world.pause_answered:
        raise Violation(
            "pause", f"slave {slave_name} started a job at {world.sim.now:.3f} after the pause was answered (settled)"
        )


def slaves_hold_counted_batches(world: Any, m: Master) -> None:
    """A batch a live slave holds (jobs not started or not finished) is one its master counts for it, unexpired.

    Only for slaves the master never lost (their leases ran out: their
    batches were taken back, rightly), and batches received since their
    last hello (a new incarnation's hello takes back the old one's).
    """
    now = world.sim.now
    still = {}
    for proc in world.slaves:
        s = proc.slave
        if not proc.alive or s.run_id != m.run_id:
            continue
        record = m.registry.get(s.id)
        if record is None or record.token != s.token or (s.run_id, s.id) in world.ever_lost:
            continue
        for batch in proc.holding():
            if batch.run != m.run_id:
                continue
            counted = record.batches.get(batch.id)
            if counted is not None and not counted.expired:
                continue
            kept = positions_of([(0, batch.end)], batch.ranges) if batch.end else []  # not given back
            if m.ledger.unresolved(kept) == 0:
                continue  # resolved elsewhere meanwhile (it ran twice): nothing to count any more
            key = (s.id, batch.id)
            since = world.uncounted.get(key, now)
            still[key] = since
            if now - since > UNCOUNTED_LEASES * m.config.lease_timeout:
                raise Violation(
                    "slave-batch-counted",
                    f"slave {s.id} has held jobs of batch {batch.id} not finished since {since:.3f}, "
                    f"which its master {'took back' if counted else 'does not know'}",
                )
    world.uncounted = still


def at_the_end(world: Any, state_path: str, failures_path: str) -> None:
    """Every job resolved exactly once: finished by a handler or failed for good, and counted once."""
    jobs = world.jobs
    failed = failed_for_good(failures_path)
    never = sorted(j for j in jobs.universe if j not in jobs.done and j not in failed)
    if never:
        raise Violation("every-job-resolved", f"{len(never)} jobs never finished nor failed for good: {never[:10]}")
    state = checkpoint.load(state_path, TARGET, {})
    if state is None or not state.complete:
        raise Violation("every-job-resolved", "the state file does not say the run is complete")
    counted = state.finished + state.failed
    if jobs.kind in KINDS_STABLE and counted != len(jobs.universe):
        raise Violation(
            "resolved-once",
            f"the state file counts {state.finished} finished + {state.failed} failed, "
            f"for {len(jobs.universe)} jobs",
        )
    # An iterator whose sequence changes cannot be counted exactly: a job a
    # handler finished just before a crash, unreported, vanishes from it (never
    # counted), and one it yields far from where it stood runs again (counted
    # twice).  The count must still never claim more than the handlers did.
    if counted > sum(jobs.runs.values()):
        raise Violation(
            "resolved-once",
            f"the state file counts {counted} jobs resolved, more than the {sum(jobs.runs.values())} handler runs",
        )
