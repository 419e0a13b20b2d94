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


def within(inner: Iterable[tuple[int, int]], outer: list[list[int]], starts: list[int] | None = None) -> bool:
    """True when every range of `inner` lies inside one range of sorted, disjoint `outer`.

    `starts`, the first position of each range of `outer`, may be given when
    the caller keeps it.
    """
    if starts is None:
        starts = [x for x, _ in outer]
    for a, b in inner:
        k = bisect_right(starts, a) - 1
        if k < 0 or b > outer[k][1]:
            return False
    return True


def expand(ranges: Iterable[Iterable[int]]) -> list[int]:
    return [p for a, b in ranges for p in range(a, b)]


def position_at(ranges: list[list[int]], index: int) -> int:
    """The position of the `index`-th job of a batch whose positions are `ranges`."""
    for a, b in ranges:
        if index < b - a:
            return a + index
        index -= b - a
    raise IndexError(index)


def positions_of(index_ranges: Iterable[tuple[int, int]], ranges: list[list[int]]) -> list[list[int]]:
    """Map ranges of indices into a batch to ranges of positions."""
    if len(ranges) == 1:  # the usual batch: one contiguous run of positions
        start = ranges[0][0]
        return [[start + i, start + j] for i, j in index_ranges]
    out: list[list[int]] = []
    for i, j in index_ranges:
        offset = 0
        for a, b in ranges:
            lo, hi = max(i, offset), min(j, offset + b - a)
            if lo < hi:
                out.append([a + lo - offset, a + hi - offset])
            offset += b - a
    return merge(out)
