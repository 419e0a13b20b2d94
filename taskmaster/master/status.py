"""What tm-status shows: a snapshot of a running master, and its rendering.

The master builds the snapshot only when asked (``snapshot``), from counters
it keeps anyway, so answering tm-status costs the run nothing measurable.
"""

from __future__ import annotations

import os
from collections import deque
from typing import TYPE_CHECKING, Any

from taskmaster.master.shutdown import Phase
from taskmaster.text import duration_text

if TYPE_CHECKING:
    from taskmaster.master.core import Master

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


def snapshot(m: Master, now: float) -> dict[str, Any]:
    """The run as tm-status shows it, at time `now`."""
    rate_10s = m.rate.rate()
    elapsed = now - m.started
    resolved = m.resolved()
    if m.phase is Phase.CLOSING:
        state = "finished"
    elif m.phase is Phase.STOPPING or m.source.exhausted and not m.ledger.undispatched():
        state = "draining"  # nothing more to hand out: waiting for the jobs in flight
    elif m.pace.paused:
        state = "paused"
    else:
        state = "running"
    return {
        "target": m.target,
        "kwargs": m.kwargs,
        "state": state,
        "finished": m.finished_overall(),
        "failed": m.resumed_from.failed + m.ledger.failed,
        "in_flight": m.registry.in_flight(),
        "buffered": m.buffered(),
        "size": m.ledger.limit,  # the window in force: --size, or the master's own choice
        "size_explicit": m.config.size is not None,
        "total": m.total,
        "percent": 100.0 * resolved / m.total if m.total else None,
        "rate_10s": rate_10s,
        "rate_overall": (m.ledger.finished + m.ledger.failed) / elapsed if elapsed > 0 else 0.0,
        "eta_seconds": eta_seconds(m.total, resolved, rate_10s),
        "elapsed": elapsed,
        "state_file": os.path.abspath(m.config.state_path),
        "failures_file": os.path.abspath(m.config.failures_path),
        "pid": os.getpid(),
        "ended": m.ended.value if m.ended else None,  # the EndReason's value: tm-status --watch reads it
        "slaves": m.registry.rows(now),
        "paused": m.pace.paused,
        "rate_limit": m.pace.rate_limit,
        "max_failures": str(m.config.max_failures) if m.config.max_failures else None,
        "halted": m.pace.halted,
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
