"""Half-open position ranges ``[start, stop)``: how positions travel and are stored."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable


def to_ranges(positions: Iterable[int]) -> list[list[int]]:
    """Coalesce positions (in any order, duplicates allowed) into sorted ranges."""
    out: list[list[int]] = []
    for p in sorted(positions):
        if out and out[-1][1] >= p:
            out[-1][1] = max(out[-1][1], p + 1)
        else:
            out.append([p, p + 1])
    return out


def merge(ranges: Iterable[Iterable[int]]) -> list[list[int]]:
    """Sort and merge overlapping or touching ranges."""
    out: list[list[int]] = []
    for a, b in sorted(tuple(r) for r in ranges):
        if out and out[-1][1] >= a:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def within(inner: Iterable[tuple[int, int]], outer: list[list[int]]) -> bool:
    """True when every range of `inner` lies inside one range of sorted, disjoint `outer`."""
    starts = [x for x, _ in outer]
    for a, b in inner:
        k = bisect_right(starts, a) - 1
        if k < 0 or b > outer[k][1]:
            return False
    return True


def count(ranges: Iterable[Iterable[int]]) -> int:
    return sum(b - a for a, b in ranges)


def expand(ranges: Iterable[Iterable[int]]) -> list[int]:
    return [p for a, b in ranges for p in range(a, b)]
