"""Jobs known by what they are, not by where they stood: what a resume may skip.

A resumed run calls ``get_jobs(last=anchor)`` and numbers what it yields from
the anchor's position on.  Skipping the positions an earlier run finished
would be right only if the iterator yielded exactly the same sequence again,
and the most natural iterators do not: one that yields what is still pending
(``SELECT ... WHERE NOT migrated``, the files left in a folder, a SCAN while
keys change) no longer yields the finished jobs, so every later job moves up
and unfinished ones would land on "finished" positions and be skipped.

So the checkpoint keeps, for each job resolved after the anchor, an 8-byte
fingerprint of its pickle, and a resumed run skips a job only when it *is* one
of those - same pickle - whatever its position.  Anything else runs: at worst
a job runs twice, which handlers must allow anyway, and none is lost.  Where
a fingerprint stood is kept too, only to notice (and say once) that the
iterator yields another sequence than before.

A job whose pickle differs from run to run (a set of strings under hash
randomisation, an object with a timestamp) is never recognised: it runs
again after a resume.  Two jobs with the same pickle are the same job; each
fingerprint is still spent once per finished job, so duplicates are
skipped only as often as they finished.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
from collections import Counter
from typing import Any

log = logging.getLogger("taskmaster.master")

FINGERPRINT_BYTES = 8
PICKLE_PROTOCOL = 4  # fixed, so a fingerprint does not change with the Python that computes it


def fingerprint(job: Any) -> bytes | None:
    """An 8-byte digest of the job's pickle; None for a job that cannot be pickled."""
    try:
        data = pickle.dumps(job, protocol=PICKLE_PROTOCOL)
    except Exception:
        return None
    return hashlib.blake2b(data, digest_size=FINGERPRINT_BYTES).digest()


def join(prints: list[bytes]) -> bytes:
    return b"".join(prints)


def split(blob: bytes) -> list[bytes]:
    if len(blob) % FINGERPRINT_BYTES:
        raise ValueError("fingerprints are not a whole number of 8-byte digests")
    return [blob[i : i + FINGERPRINT_BYTES] for i in range(0, len(blob), FINGERPRINT_BYTES)]


class FinishedBefore:
    """The jobs an earlier run resolved after the anchor, by fingerprint.

    ``skip(position, job)`` is asked for each job the resumed iterator
    yields, in order, until every fingerprint was met or the iterator went
    `window` positions past the last of them: a job finished before but
    yielded much later (a reordered iterator) then simply runs again.
    """

    def __init__(self, positions: list[int], prints: list[bytes], window: int) -> None:
        if len(positions) != len(prints):
            raise ValueError("one fingerprint per position")
        # position -> fingerprint, as the earlier run numbered them
        self.where = dict(zip(positions, prints, strict=True))
        self.owed: Counter[bytes] = Counter(prints)  # finished jobs not met again yet
        self.until = (max(positions) + 1 + window) if positions else 0  # stop looking at this position
        self.met = 0
        self.changed = False  # the iterator's sequence differs from the earlier run's

    @property
    def active(self) -> bool:
        return bool(self.owed)

    def skip(self, position: int, job: Any) -> bool:
        """Is the job yielded at `position` one the earlier run resolved?"""
        if position >= self.until:
            self._give_up()
            return False
        expected = self.where.get(position)
        print_ = fingerprint(job)
        if print_ is not None and self.owed[print_] > 0:
            self.owed[print_] -= 1
            if not self.owed[print_]:
                del self.owed[print_]
            self.met += 1
            if expected != print_:
                self._changed()
            return True
        if expected is not None:
            self._changed()
        return False

    def remaining(self, high: int) -> list[tuple[int, bytes]]:
        """(position, fingerprint) of the jobs still owed at positions the iterator has not reached.

        A checkpoint of the resumed run keeps them: a crash before the
        iterator reaches them must not forget that they finished.
        """
        budget = Counter(self.owed)
        out = []
        for position in sorted(p for p in self.where if p >= high):
            print_ = self.where[position]
            if budget[print_] > 0:
                budget[print_] -= 1
                out.append((position, print_))
        return out

    def _give_up(self) -> None:
        if self.owed:
            self._changed()
            log.info(
                "%d jobs resolved before the resume were not yielded again near where they stood; "
                "if get_jobs yields them later, they run again",
                sum(self.owed.values()),
            )
            self.owed.clear()

    def _changed(self) -> None:
        if not self.changed:
            self.changed = True
            log.warning(
                "get_jobs(last=...) yields another sequence than the run before it; "
                "jobs that finished are recognised by their pickle and skipped, every other job runs",
                extra={"event": "sequence_changed"},
            )
