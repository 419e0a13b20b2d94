"""Every seed that ever found a bug, with the flags it needs: CI replays them all (test_simulation.py).

A seed is only meaningful for the simulation as it was when it was found:
a change to how the world draws its scenario moves every seed.  So each
entry is re-checked whenever the world changes (``python -m tests.sim
--seed N`` with the flags), and re-found - with the bug put back - if it
no longer shows it.  ``open`` entries are bugs not fixed yet: their tests
are expected to fail (strict xfail), and pass as soon as the fix lands.
"""

from __future__ import annotations

from typing import NamedTuple


class Regression(NamedTuple):
    seed: int
    what: str
    changing: bool = False  # --iterators all
    size_check: bool = False  # the --size invariant (failing on this branch: see invariants.SIZE_IS_A_BOUND)
    open: bool = False  # the bug is not fixed yet
    job_timeouts: bool = True  # seeds may have a --job-timeout (--no-job-timeouts: none has)


REGRESSIONS: list[Regression] = [
    Regression(800, "one request answered twice, by its retry and its parked entry: the run never ended"),
    Regression(0, "--size exceeded: the window stretches for small jobs", size_check=True),
    Regression(8, "a resume skips by position: a vanishing get_jobs loses jobs", True, job_timeouts=False),
    Regression(0, "a resume skips by position: new jobs inserted, lost", True, job_timeouts=False),
    Regression(23, "a resume skips by position: a reordered get_jobs loses jobs", True, job_timeouts=False),
    Regression(7, "a handler that catches every Exception swallows --job-timeout's: counted finished"),
    Regression(673, "a pause answered settled on a GIVEBACK older than the last REQUEST"),
    Regression(973, "a pause answered settled on a GIVEBACK older than the last REQUEST"),
    Regression(27641, "a HELLO late from a given-up connection made a new incarnation", job_timeouts=False),
    Regression(47737, "a pause settled while a slave held a batch resolved elsewhere", job_timeouts=False),
]
