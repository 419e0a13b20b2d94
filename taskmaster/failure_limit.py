"""--max-failures: halt the run before a bug fills the failures file.

``N`` halts once more than N jobs failed for good in this run; ``P%`` once
more than P % of the jobs resolved in this run (finished or failed for good)
failed for good, judged only once at least MIN_RESOLVED_FOR_PERCENT are
resolved, so that the first few failures of a run do not decide it.  Only
this run counts: after a halt, the fix and a restart, the failures of the
halted run (they wait in the failures file for --retry-failed) do not halt
the new one at once.
"""

from __future__ import annotations

import re
from typing import NamedTuple

MIN_RESOLVED_FOR_PERCENT = 1000
_SPEC = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*")


class FailureLimit(NamedTuple):
    """How many jobs may fail for good before the run halts: a count, or a percentage."""

    count: int | None = None
    percent: float | None = None

    def __str__(self) -> str:
        """As written on the command line (and shown by tm-status): "100" or "5%"."""
        return f"{self.count}" if self.count is not None else f"{self.percent:g}%"

    def exceeded(self, failed: int, resolved: int) -> bool:
        """Has this run, with `failed` of `resolved` jobs failed for good, gone past the limit?"""
        if self.count is not None:
            return failed > self.count
        assert self.percent is not None
        return resolved >= MIN_RESOLVED_FOR_PERCENT and failed * 100.0 > self.percent * resolved

    def describe(self, failed: int, resolved: int) -> str:
        """Why the run halts, for its last line."""
        if self.count is not None:
            return f"{failed} jobs failed for good in this run, more than --max-failures {self.count}"
        share = 100.0 * failed / max(resolved, 1)
        return (
            f"{failed} of {resolved} jobs resolved in this run failed for good ({share:.1f}%), "
            f"more than --max-failures {self}"
        )


def parse(text: str) -> FailureLimit:
    """'N' (a whole number >= 0) or 'P%' (0 <= P < 100); ValueError, saying what is wrong, otherwise."""
    match = _SPEC.fullmatch(text)
    if match and match.group(2):
        percent = float(match.group(1))
        if percent < 100:
            return FailureLimit(percent=percent)
    elif match and match.group(1).isdigit():
        return FailureLimit(count=int(match.group(1)))
    raise ValueError(f"{text!r} is neither a number of jobs (e.g. 100) nor a percentage below 100 (e.g. 5%)")
