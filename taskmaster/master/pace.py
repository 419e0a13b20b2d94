"""--rate: at most N jobs started per second across all slaves, as a token bucket.

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
