"""What tm-status shows: a snapshot of a running master, and its rendering.

The master builds the snapshot only when asked (``snapshot``), from counters
it keeps anyway, so answering tm-status costs the run nothing measurable.
What the snapshot reads is a ``RunView``: the run's parts (the ledger, the
slave registry, the pace...) and where it stands, handed over by the master;
nothing here reaches back into the master, and nothing here changes the run.
/metrics reads the same view.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from taskmaster.master.shutdown import Phase
from taskmaster.text import duration_text

if TYPE_CHECKING:
    from taskmaster.config import MasterConfig
    from taskmaster.master.checkpoint import State
    from taskmaster.master.failures_file import FailedJobs
    from taskmaster.master.ledger import Ledger
    from taskmaster.master.outcome import EndReason
    from taskmaster.master.pace import Pace
    from taskmaster.master.registry import SlaveRegistry
    from taskmaster.master.shutdown import Shutdown
    from taskmaster.master.source import JobSource

RATE_WINDOW_SECONDS = 10.0


class RateMeter:
    """Jobs per second over the last ten seconds, from samples taken each tick."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, int]] = deque()

    def sample(self, now: float, count: int) -> None:
        self.samples.append((now, count))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW_SECONDS:
            self.samples.popleft()

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0


@dataclass(frozen=True)
class RunView:
    """A running master as tm-status and /metrics read it: its parts, and where the run stands.

    The parts are the master's own objects, read and never changed here; the
    plain values are those of the moment the view was made (the master makes
    one for each snapshot or scrape).
    """

    target: str
    kwargs: dict[str, str]
    config: MasterConfig
    ledger: Ledger
    registry: SlaveRegistry
    source: JobSource
    pace: Pace
    shutdown: Shutdown
    failed_jobs: FailedJobs
    resumed_from: State  # what earlier runs of the state file did
    rate: RateMeter
    started: float
    total: int | None
    ended: EndReason | None
    checkpointed_at: float | None  # when the state file last held the run's progress (monotonic)

    def finished_overall(self) -> int:
        """Jobs finished, in this run and in those it resumed."""
        return self.resumed_from.finished + self.ledger.finished

    def resolved(self) -> int:
        """Jobs finished or failed for good, in this run and in those it resumed."""
        return self.finished_overall() + self.resumed_from.failed + self.ledger.failed

    def buffered(self) -> int:
        """Jobs pulled from the iterator, not resolved and not with a slave: waiting to be handed out."""
        return max(0, self.ledger.pending() - self.registry.in_flight())


def snapshot(run: RunView, now: float) -> dict[str, Any]:
    """The run as tm-status shows it, at time `now`."""
    rate_10s = run.rate.rate()
    elapsed = now - run.started
    resolved = run.resolved()
    phase = run.shutdown.phase
    if phase is Phase.CLOSING:
        state = "finished"
    elif phase is Phase.STOPPING or run.source.exhausted and not run.ledger.undispatched():
        state = "draining"  # nothing more to hand out: waiting for the jobs in flight
    elif run.pace.paused:
        state = "paused"
    else:
        state = "running"
    return {
        "target": run.target,
        "kwargs": run.kwargs,
        "state": state,
        "finished": run.finished_overall(),
        "failed": run.resumed_from.failed + run.ledger.failed,
        "in_flight": run.registry.in_flight(),
        "buffered": run.buffered(),
        "size": run.ledger.limit,  # the window in force: --size, or the master's own choice
        "size_explicit": run.config.size is not None,
        "total": run.total,
        "percent": 100.0 * resolved / run.total if run.total else None,
        "rate_10s": rate_10s,
        "rate_overall": (run.ledger.finished + run.ledger.failed) / elapsed if elapsed > 0 else 0.0,
        "eta_seconds": eta_seconds(run.total, resolved, rate_10s),
        "elapsed": elapsed,
        "state_file": os.path.abspath(run.config.state_path),
        "failures_file": os.path.abspath(run.config.failures_path),
        "pid": os.getpid(),
        "ended": run.ended.value if run.ended else None,  # the EndReason's value: tm-status --watch reads it
        "slaves": run.registry.rows(now),
        "paused": run.pace.paused,
        "rate_limit": run.pace.rate_limit,
        "max_failures": str(run.config.max_failures) if run.config.max_failures else None,
        "halted": run.pace.halted,
    }


def eta_seconds(total: int | None, resolved: int, rate: float) -> float | None:
    if total is None or rate <= 0:
        return None
    return max(0.0, (total - resolved) / rate)


def control_lines(snap: dict[str, Any]) -> list[str]:
    """The live settings: paused (tm-ctl), the rate limit and the halt threshold (--max-failures)."""
    rate, limit = snap.get("rate_limit"), snap.get("max_failures")
    lines = [
        f"paused      {'yes: no new job starts (tm-ctl resume)' if snap.get('paused') else 'no'}",
        f"rate limit  {f'{rate:g} jobs/s' if rate else 'none'}",
        f"halt after  {f'more than {limit} failed' if limit else 'never (no --max-failures)'}",
    ]
    if snap.get("halted"):
        lines.append(f"halted      {snap['halted']}")
    return lines


def render(snap: dict[str, Any]) -> str:
    """The snapshot as a person reads it."""
    args = " ".join(f"{k}={v}" for k, v in sorted(snap["kwargs"].items()))
    total = snap.get("total")
    done = f"{snap['finished']}" + (f" of {total} ({snap['percent']:.1f}%)" if total else "")
    lines = [
        f"target      {snap['target']} {args}".rstrip(),
        f"state       {snap['state']}",
        f"finished    {done}",
        f"failed      {snap['failed']}",
        f"in flight   {snap['in_flight']}",
        f"buffered    {snap['buffered']} / {snap['size']}"
        + ("" if snap.get("size_explicit", True) else " (window chosen by the master: no --size)"),
        f"rate        {snap['rate_10s']:.1f} jobs/s (last 10 s), {snap['rate_overall']:.1f} jobs/s overall",
        f"elapsed     {duration_text(snap['elapsed'])}",
        f"eta         {duration_text(snap['eta_seconds'])}",
        f"state file  {snap['state_file']}",
        *control_lines(snap),
        f"slaves      {len(snap['slaves'])}",
    ]
    if snap["slaves"]:
        lines.append(f"  {'id':<32} {'host':<16} {'pid':>7} {'finished':>10} {'in flight':>9} {'last seen':>9}  state")
        for s in snap["slaves"]:
            lines.append(
                f"  {s['id']:<32} {s['host'][:16]:<16} {s['pid']:>7} {s['finished']:>10} {s['in_flight']:>9} "
                f"{s['last_seen']:>8.1f}s  {s['state']}"
            )
    return "\n".join(lines)
