"""How many jobs the master holds at once: ``--size`` exactly, or a window of its own choosing.

An explicit ``--size`` (or ``size=`` in ``taskmaster.run``) is a hard bound:
jobs taken from the iterator and not yet resolved, buffered plus in flight,
never exceed it.  People set it low on purpose - to limit what get_jobs reads
ahead from a live table, and what a crash makes them run again.

Without one, the master chooses: DEFAULT_SIZE jobs, stretched up to
STRETCH times that while jobs pickle small (SMALL_JOB_BYTES or fewer on
average), because a round trip to a slave takes the same time whatever the
job, and DEFAULT_SIZE tiny jobs do not cover it at millions of jobs a second.
The memory is then about that of DEFAULT_SIZE jobs of 1 KB.
"""

from __future__ import annotations

DEFAULT_SIZE = 10000
SMALL_JOB_BYTES = 64
STRETCH = 16


def window_of(size: int | None) -> tuple[int, int]:
    """(jobs held, how far that may stretch for small jobs) for an explicit `size`, or None for the default."""
    return (DEFAULT_SIZE, STRETCH) if size is None else (size, 1)
