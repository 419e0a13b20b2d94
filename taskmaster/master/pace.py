"""How fast jobs go out: paused (tm-ctl), --rate's token bucket, halted (--max-failures).

``Pace`` holds the three; ``Throttle`` is the bucket.  --rate: at most N jobs
started per second across all slaves.

The master is the only place that sees every job handed out, so the limit
lives there and slaves need no setting: each job handed out takes a token,
tokens accrue at `rate` a second, and a request that finds too few waits
(parked, like one that finds no jobs) until enough have accrued.  The bucket
holds at most BURST_SECONDS of tokens, so over any window of W seconds at
most ``rate * (W + BURST_SECONDS)`` jobs go out: 1 % over the rate on a
10-second window.

Which jobs take a token: every hand-out, including a retry of a failed job
and the jobs of a lost slave handed out again (they may well have started
there: the database saw them).  Jobs a slave gives back (a recall, a pause)
were never started - the slave cuts them off under its workers' claim lock -
so their tokens are refunded.
"""

from __future__ import annotations

import math

BURST_SECONDS = 0.1  # tokens the bucket holds at most, in seconds of the rate
# A parked request is served once this many seconds of tokens have accrued
# (or its whole want): at high rates many small batches would cost more than
# they are worth, at low rates it is one job.
MIN_GRANT_SECONDS = 0.002


class Throttle:
    """A token bucket of `rate` jobs per second; `now` is time.monotonic()."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * BURST_SECONDS)
        self.tokens = self.capacity
        self.stamp = now
        self.min_grant = max(1, math.ceil(rate * MIN_GRANT_SECONDS))

    def set_rate(self, rate: float, now: float) -> None:
        """A new rate from now on: what accrued so far accrued at the old one."""
        self._refill(now)
        self.rate = rate
        self.capacity = max(1.0, rate * BURST_SECONDS)
        self.tokens = min(self.tokens, self.capacity)
        self.min_grant = max(1, math.ceil(rate * MIN_GRANT_SECONDS))

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def allowance(self, want: int, now: float) -> int:
        """How many of `want` jobs may go out now: 0 until enough tokens accrued for a worthwhile batch."""
        self._refill(now)
        available = int(self.tokens)
        if available < min(want, self.min_grant):
            return 0
        return min(want, available)

    def take(self, n: int) -> None:
        """`n` jobs went out."""
        self.tokens -= n

    def refund(self, n: int) -> None:
        """`n` jobs handed out were given back unstarted: they did not count."""
        self.tokens = min(self.capacity, self.tokens + n)


class Pace:
    """The master's live settings for handing out: paused, the rate limit (with its throttle), halted.

    One owner for them: tm-ctl and --max-failures change them (``control``),
    the hand-out asks them (``dispatch``), tm-status and /metrics read them.
    """

    def __init__(self, rate: float | None, now: float) -> None:
        self.paused = False
        self.rate_limit = rate
        # A rate of 0 is no limit, as tm-status and /metrics show it (tm-ctl and --rate refuse it).
        self.throttle: Throttle | None = Throttle(rate, now) if rate else None
        self.halted: str | None = None  # why --max-failures halted the run

    @property
    def holding(self) -> bool:
        """No job may start (paused or halted): the slaves are asked for the jobs they have not started."""
        return self.paused or self.halted is not None

    def pause(self) -> bool:
        """Pause handing out; True if it was going on until now."""
        was_paused, self.paused = self.paused, True
        return not was_paused

    def resume(self) -> bool:
        """Go on handing out; True if it was paused until now."""
        was_paused, self.paused = self.paused, False
        return was_paused

    def set_rate(self, rate: float | None, now: float) -> None:
        """The rate limit from `now` on: `rate` jobs a second, or none (None or 0)."""
        self.rate_limit = rate
        if not rate:
            self.throttle = None
        elif self.throttle is None:
            self.throttle = Throttle(rate, now)
        else:
            self.throttle.set_rate(rate, now)

    def halt(self, reason: str) -> None:
        """--max-failures was exceeded, for `reason`: no job starts any more."""
        self.halted = reason

    def allowance(self, want: int, now: float) -> int:
        """How many of `want` jobs may go out now: none while paused or halted, what --rate's tokens allow."""
        if self.holding:
            return 0
        return want if self.throttle is None else self.throttle.allowance(want, now)

    def took(self, n: int) -> None:
        """`n` jobs went out."""
        if self.throttle is not None:
            self.throttle.take(n)

    def refund(self, n: int) -> None:
        """`n` jobs handed out came back unstarted: they do not count against --rate."""
        if self.throttle is not None:
            self.throttle.refund(n)
