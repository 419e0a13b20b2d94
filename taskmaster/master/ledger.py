"""The master's record of every job it holds, by position.

Jobs are numbered in the order ``get_jobs`` yields them.  The ledger keeps the
window ``[low, high)`` of positions that were pulled from the iterator but are
not all resolved yet, in a ring of slots, so the master's memory is bounded
by ``--size`` whatever the total number of jobs.  The window holds ``--size``
jobs; while jobs are small it may stretch to the whole ring, a fixed multiple
of ``--size`` (see ``master.SMALL_JOB_BYTES``): tiny jobs then fill the pipe to
every slave without costing more memory than ``--size`` larger ones would.

* ``low``   - the first position not resolved (finished or failed for good);
* ``fresh`` - the first position never handed to a slave;
* ``high``  - the next position the iterator will fill.

Each slot holds the job's value and one state byte.  The state bytes live in a
``bytearray`` so that acknowledging a range of a thousand jobs, or finding the
next unresolved position, is one C-level operation instead of a Python loop
per job.  Values of resolved jobs stay in their slot until the ring reuses it,
which is what lets the checkpoint name an anchor job after it finished.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from typing import Any

from taskmaster.master.identity import FinishedBefore, fingerprint
from taskmaster.wire.ranges import merge, to_ranges

PENDING, DONE, FAILED = 0, 1, 2
_RESOLVED_RUNS = re.compile(rb"[\x01\x02]+")
# The checkpoint names at most this many jobs resolved after the anchor (by
# fingerprint, see taskmaster.identity): with an explicit --size there are
# never more; a stretched window's further ones run again after a crash.
MAX_REMEMBERED = 10000


class Ledger:
    def __init__(self, size: int, start: int = 0, before: FinishedBefore | None = None, stretch: int = 1) -> None:
        if size < 1 or stretch < 1:
            raise ValueError("size and stretch must be positive")
        self.window = size  # jobs held at most (``--size``) ...
        self.size = size * stretch  # ... or up to this many, the ring's slots, while they are small
        self.limit = size  # the window in force now
        self.values: list[Any] = [None] * self.size
        self.states = bytearray(self.size)
        self.start = start
        self.low = start
        self.high = start
        self.fresh = start
        # Positions handed out before whose lease expired: served before fresh ones.
        self.requeued: deque[int] = deque()
        # (position, slave that failed it): retried, preferably elsewhere.
        self.retries: deque[tuple[int, str]] = deque()
        self.attempts: dict[int, int] = {}
        self.failed_on: dict[int, str] = {}  # the slave a job last failed on, until it is resolved
        # Jobs an earlier run resolved after the anchor (from the checkpoint):
        # a job the iterator yields is marked resolved, never sent again, only
        # if it is one of them by its pickle - never by its position alone.
        self.before = before if before is not None and before.active else None
        self.prints: dict[int, bytes] = {}  # position -> fingerprint, computed for a checkpoint
        self.finished = 0  # resolved as done during this run
        self.failed = 0  # failed for good during this run

    # ------------------------------------------------------------ capacity

    def space(self) -> int:
        return max(0, self.limit - (self.high - self.low))

    def stretch(self, small_jobs: bool) -> None:
        """Hold up to all the ring's slots while jobs are small, else ``--size``."""
        self.limit = self.size if small_jobs else self.window

    def undispatched(self) -> int:
        """Jobs waiting to be handed out (some may be resolved meanwhile)."""
        return (self.high - self.fresh) + len(self.requeued) + len(self.retries)

    def pending(self) -> int:
        """Jobs pulled and not resolved: buffered or with a slave."""
        if self.high == self.low:
            return 0
        return sum(self.states.count(PENDING, i, j) for i, j in self._segments(self.low, self.high))

    def drained(self) -> bool:
        """Every job pulled so far is resolved."""
        return self.low == self.high

    def _segments(self, a: int, b: int) -> list[tuple[int, int]]:
        """Ring index ranges covering positions [a, b), with b - a <= size."""
        i = a % self.size
        j = i + (b - a)
        if j <= self.size:
            return [(i, j)]
        return [(i, self.size), (0, j - self.size)]

    # -------------------------------------------------------------- filling

    def add(self, jobs: list) -> None:
        """Append jobs pulled from the iterator at positions high, high+1, ..."""
        n = len(jobs)
        if n > self.space():
            raise ValueError("ledger overflow")
        start = self.high
        offset = 0
        for i, j in self._segments(start, start + n):
            self.values[i:j] = jobs[offset : offset + j - i]
            self.states[i:j] = bytes(j - i)
            offset += j - i
        self.high += n
        if self.before is not None:
            self._skip_known(start, jobs)

    def _skip_known(self, start: int, jobs: list) -> None:
        """Mark resolved the jobs an earlier run resolved (see taskmaster.identity)."""
        before = self.before
        assert before is not None
        for offset, job in enumerate(jobs):
            if not before.active:
                break
            if before.skip(start + offset, job):
                self.states[(start + offset) % self.size] = DONE
        if not before.active:
            self.before = None
        self._advance()

    def truncate(self, position: int) -> None:
        """Forget positions >= position: the iterator stops there.

        The caller guarantees no slave holds any of them (they were only just
        taken for a batch that is not sent).
        """
        if not self.low <= position <= self.high:
            raise ValueError("position outside the window")
        self.high = position
        self.fresh = min(self.fresh, position)
        self.before = None
        self._advance()

    # ------------------------------------------------------------ dispatch

    def take(self, n: int, slave: str, alone: bool) -> tuple[list[Any], list[list[int]]]:
        """Up to n jobs for `slave`: retries, then requeued, then fresh ones.

        Returns (jobs, ranges).  A job that failed
        on `slave` goes to it again only if it is the only slave (`alone`).
        Jobs are ordered as the ranges list their positions.
        """
        states, size = self.states, self.size
        again: list[int] = []
        chosen: set[int] = set()
        for _ in range(len(self.retries)):
            if len(again) >= n:
                break
            position, failed_on = self.retries.popleft()
            if states[position % size] != PENDING or position < self.low or position in chosen:
                continue  # resolved, or queued twice (a retry requeued again with its lost slave's batch)
            if failed_on != slave or alone:
                again.append(position)
                chosen.add(position)
            else:
                self.retries.append((position, failed_on))
        while self.requeued and len(again) < n:
            position = self.requeued.popleft()
            if position >= self.low and states[position % size] == PENDING and position not in chosen:
                again.append(position)
                chosen.add(position)
        again.sort()
        jobs = [self.values[p % size] for p in again]
        ranges = to_ranges(again)

        k = min(n - len(jobs), self.high - self.fresh)
        if k > 0:
            a, b = self.fresh, self.fresh + k
            self.fresh = b
            fresh_jobs: list[Any] = []
            clean = True
            for i, j in self._segments(a, b):
                fresh_jobs.extend(self.values[i:j])
                clean = clean and states.count(0, i, j) == j - i
            if clean:
                jobs.extend(fresh_jobs)
                ranges.append([a, b])
            else:  # only just after a resume: skip jobs an earlier run resolved
                picked = [p for p in range(a, b) if states[p % size] == PENDING]
                jobs.extend(self.values[p % size] for p in picked)
                ranges.extend(to_ranges(picked))
        # Requeued positions can touch the fresh ones: one range, as the slave will acknowledge it.
        return jobs, merge(ranges)

    def requeue(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Put the unresolved positions of ranges back in front of fresh jobs."""
        count = 0
        for a, b in ranges:
            for p in range(max(a, self.low), min(b, self.high)):
                if self.states[p % self.size] == PENDING:
                    if p in self.failed_on:  # still a retry: it keeps avoiding the slave it failed on
                        self.retries.append((p, self.failed_on[p]))
                    else:
                        self.requeued.append(p)
                    count += 1
        return count

    def retry(self, position: int, slave: str) -> None:
        self.failed_on[position] = slave
        self.retries.append((position, slave))

    # ----------------------------------------------------------- resolution

    def mark_done(self, ranges: Iterable[tuple[int, int]]) -> int:
        """Resolve positions as finished; return how many were not already."""
        newly = 0
        for a, b in ranges:
            a, b = max(a, self.low), min(b, self.high)
            if a >= b:
                continue
            for i, j in self._segments(a, b):
                segment = self.states[i:j]
                zeros = segment.count(0)
                if zeros:
                    self.states[i:j] = segment.replace(b"\x00", b"\x01")
                    newly += zeros
            if self.attempts:
                for p in [p for p in self.attempts if a <= p < b]:
                    del self.attempts[p]
                    self.failed_on.pop(p, None)
        if newly:
            self.finished += newly
            self._advance()
        return newly

    def mark_failed(self, position: int) -> bool:
        """Resolve one position as failed for good."""
        if not self.low <= position < self.high or self.states[position % self.size] != PENDING:
            return False
        self.states[position % self.size] = FAILED
        self.attempts.pop(position, None)
        self.failed_on.pop(position, None)
        self.failed += 1
        self._advance()
        return True

    def is_pending(self, position: int) -> bool:
        return self.low <= position < self.high and self.states[position % self.size] == PENDING

    def value(self, position: int) -> Any:
        return self.values[position % self.size]

    def unresolved(self, ranges: Iterable[tuple[int, int]]) -> int:
        """How many positions of ranges are still pending."""
        count = 0
        for a, b in ranges:
            a, b = max(a, self.low), min(b, self.high)
            for i, j in self._segments(a, b) if a < b else ():
                count += self.states.count(0, i, j)
        return count

    def _advance(self) -> None:
        before = self.low
        while self.low < self.high:
            i, j = self._segments(self.low, self.high)[0]
            k = self.states.find(0, i, j)
            if k == -1:
                self.low += j - i
            else:
                self.low += k - i
                break
        if self.low > before:
            # Positions behind low are resolved: never to be handed out.  (A
            # resume can resolve jobs nobody was handed; left behind `fresh`,
            # their slots would be handed once the ring wraps onto them.)
            self.fresh = max(self.fresh, self.low)
            # Drop the values behind the window, but the last one: it is the
            # checkpoint's anchor once everything pulled is resolved.  The
            # ring may be far larger than the window, so values left in its
            # slots would hold far more than --size jobs' worth of memory.
            # (A slot of a position p behind the window already holds p + size
            # when p + size < high: that one is left alone.)
            first = max(self.start, before - 1, self.high - self.size)
            if first < self.low - 1:
                for i, j in self._segments(first, self.low - 1):
                    self.values[i:j] = [None] * (j - i)

    # ------------------------------------------------------------ checkpoint

    def anchor(self) -> tuple[int, Any, list[list[int]], list[bytes]] | None:
        """(position, value, resolved ranges from there, their fingerprints) for the checkpoint.

        The anchor is the first unresolved job; when everything pulled so far
        is resolved it is the last job pulled, listed as resolved, because
        resuming needs a real job value to hand to get_jobs(last=...).  The
        jobs resolved from there on are named by fingerprint, in the order of
        their positions (at most MAX_REMEMBERED), and so are those an earlier
        run resolved that the iterator has not reached yet.  None until this
        run pulled anything.
        """
        if self.high == self.start:
            return None
        position = self.low if self.low < self.high else self.high - 1
        positions: list[int] = []
        for i, j in self._segments(position, self.high):
            base = position - i if i == position % self.size else self.high - j
            for match in _RESOLVED_RUNS.finditer(self.states, i, j):
                positions.extend(range(base + match.start(), base + match.end()))
                if len(positions) >= MAX_REMEMBERED:
                    break
        del positions[MAX_REMEMBERED:]
        prints = self.prints
        for p in [p for p in prints if p < position]:
            del prints[p]  # behind the anchor now: never needed again
        named: list[tuple[int, bytes]] = []
        for p in positions:
            print_ = prints.get(p)
            if print_ is None:
                print_ = fingerprint(self.values[p % self.size])
                if print_ is None:
                    continue  # cannot be pickled: it is not named, and would run again
                prints[p] = print_
            named.append((p, print_))
        if self.before is not None:
            named.extend(self.before.remaining(self.high))
        named.sort()
        return (
            position,
            self.values[position % self.size],
            to_ranges(p for p, _ in named),
            [print_ for _, print_ in named],
        )
