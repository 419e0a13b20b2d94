"""The user's side of a run: get_jobs (four kinds of iterator) and the handler, with the world's record of both.

Jobs are ints (10, 20, 30...: room between them for jobs inserted later).
The "database" is this module's record: which jobs exist, which a handler
finished (``done``), how often each ran.

* ``range``: the same jobs in the same order on every open (``range(last, N)``);
* ``vanishing``: ``SELECT ... WHERE NOT done AND id >= last ORDER BY id`` - finished jobs vanish;
* ``reordered``: ``last`` first, then the jobs after it shuffled in blocks, differently on each open;
* ``inserted``: from the second open on, new jobs appear between the old ones.

Only ``range`` keeps a resumed run's positions meaning the same jobs; the
others are what a real get_jobs over a live table does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from random import Random
from typing import Any

KINDS_STABLE = ("range",)
BLOCK = 80  # the reordered iterator's sort key: ids are 10, 20, ..., so a block holds 8
KINDS_ALL = ("range", "vanishing", "reordered", "inserted")


class JobFailed(Exception):
    """What a failing handler raises."""


class Jobs:
    def __init__(self, rng: Random, kind: str, n: int, flaky: float, broken: float, quirks: Random) -> None:
        self.rng = rng
        self.kind = kind
        self.universe: set[int] = {10 * (i + 1) for i in range(n)}
        self.done: set[int] = set()  # a handler finished it (at least once)
        self.runs: Counter[int] = Counter()  # handler calls, finished or not
        ids = sorted(self.universe)
        self.flaky = {j for j in ids if rng.random() < flaky}  # fail half their attempts
        self.broken = {j for j in ids if rng.random() < broken}  # fail every attempt
        # Handlers that catch every Exception (and so --job-timeout's): drawn
        # from `quirks`, so that the rest of the world's draws stay as they were.
        self.swallowing = {j for j in ids if quirks.random() < 0.1}
        self.opened = 0
        self.yielded: list[int] = []  # what the iterator of the current master yielded, in order

    def get_jobs(self, last: Any = None) -> Iterator[int]:
        """The user's get_jobs: a list evaluated at open (a query), yielded lazily (a cursor)."""
        self.opened += 1
        self.yielded = []
        low = -1 if last is None else int(last)
        if self.kind == "inserted" and self.opened > 1:
            self._insert(low)
        if self.kind == "reordered":
            # ORDER BY a coarse key (a block of 8 ids), ties in any order: "from
            # the anchor on" is from the anchor's block on, whatever order the
            # last run's ties came in.  (Filtering on the id itself, as a sorted
            # iterator may, would drop the anchor's block-mates that came after
            # it last time: a get_jobs that breaks the contract, not a resume.)
            ids = sorted(j for j in self.universe if j // BLOCK >= low // BLOCK)
            if self.opened > 1:
                blocks: dict[int, list[int]] = {}
                for j in ids:
                    blocks.setdefault(j // BLOCK, []).append(j)
                ids = []
                for key in sorted(blocks):
                    self.rng.shuffle(blocks[key])
                    ids.extend(blocks[key])
        else:
            ids = sorted(j for j in self.universe if j >= low)
            if self.kind == "vanishing":
                ids = [j for j in ids if j not in self.done]
        return self._cursor(ids)

    def _cursor(self, ids: list[int]) -> Iterator[int]:
        for j in ids:
            self.yielded.append(j)
            yield j

    def _insert(self, low: int) -> None:
        later = sorted(j for j in self.universe if j > low and j % 10 == 0)
        for j in self.rng.sample(later, min(len(later), self.rng.randint(1, 5))):
            new = j + min(self.opened, 9)
            if new not in self.universe:
                self.universe.add(new)
                if self.rng.random() < 0.1:
                    self.flaky.add(new)

    def handle(self, job: int, interrupted: BaseException | None = None) -> None:
        """The handler: idempotent; some jobs fail some attempts, some every one.

        `interrupted`: --job-timeout's exception, raised into the handler
        while it waits (its simulated duration was longer).  Some handlers
        catch every Exception around their work, and return as if done.
        """
        self.runs[job] += 1
        if interrupted is not None:
            try:
                raise interrupted
            except Exception:
                if job in self.swallowing:
                    return  # "except Exception: log and go on" - the job is not done
                raise
        if job in self.broken or (job in self.flaky and self.rng.random() < 0.5):
            raise JobFailed(f"job {job} failed")
        self.done.add(job)
