"""Where a run's jobs come from: the user's iterator, pulled into the ledger.

A filler greenlet pulls jobs while the ledger has room, in chunks, yielding
between chunks so the master keeps answering slaves; with monkey patching, a
get_jobs that waits on a database yields too.  A chunk is sized to take about
FILL_SECONDS at the iterator's measured pace: thousands of jobs from a range,
one or two from a get_jobs that queries a database per job - whose jobs must
not wait in a half-pulled chunk while slaves run dry.  The source also remembers why
it stopped: the iterator ran out, raised, or produced a job that cannot be
pickled - the run is then cut just before that job.
"""

from __future__ import annotations

import logging
import pickle
import time
import traceback
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import gevent
import gevent.event

from taskmaster.master.ledger import Ledger
from taskmaster.text import short_repr
from taskmaster.wire.ranges import expand, to_ranges

log = logging.getLogger("taskmaster.master")

FILL_CHUNK = 2048  # jobs pulled from the iterator between two looks at the socket, at most
FILL_SECONDS = 0.002  # ... and about this long, at the pace the iterator has shown


class JobSource:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.iterator: Iterator[Any] = iter(())
        self.exhausted = False  # no more jobs will come
        self.error: str | None = None  # the traceback, when get_jobs raised
        self.crash: str | None = None  # what stopped the source, when it was no Exception of get_jobs
        self.unpicklable_error: str | None = None  # why the run was cut at an unpicklable job
        self.job_repr = True  # False: that message names the job by position only (its repr may hold secrets)
        self.room = gevent.event.Event()

    def open(self, get_jobs: Callable[..., Any], kwargs: dict[str, str], **last: Any) -> None:
        """Call get_jobs(**last, **kwargs); an exception there ends the source with an error."""
        try:
            self.iterator = iter(get_jobs(**last, **kwargs))
        except Exception:
            self.error = traceback.format_exc()
            self.exhausted = True

    def serve(self, jobs: list[Any]) -> None:
        """Serve a fixed list of jobs (a replay of the failures file)."""
        self.iterator = iter(jobs)

    def wake(self) -> None:
        """The ledger may have room: let the filler look."""
        if not self.exhausted:
            self.room.set()

    def fill(self) -> None:
        """The filler greenlet: pull jobs from the iterator whenever the ledger has room.

        Whatever stops it, but being killed at the end of the run, ends the
        source with an error: the master then finishes the jobs pulled so
        far and reports it, instead of waiting for ever for jobs that cannot
        come.
        """
        try:
            self._fill()
        except gevent.GreenletExit:
            raise
        except BaseException as exc:
            self._crashed(exc)
            self.exhausted = True

    def _crashed(self, exc: BaseException) -> None:
        """Not an Exception from get_jobs (a BaseException, or a bug here): the source ends with it."""
        self.crash = f"{type(exc).__name__}: {exc}"
        self.error = traceback.format_exc()
        log.error("the job source stopped on %s", self.crash)

    def _fill(self) -> None:
        ledger = self.ledger
        chunk_size = 1  # grows as fast as the iterator shows it is fast
        while not self.exhausted:
            room = ledger.space()
            if room == 0 or room < min(chunk_size, ledger.size // 4 or 1) and ledger.undispatched() > 0:
                self.room.clear()
                self.room.wait()
                continue
            n = min(room, chunk_size)
            chunk: list[Any] = []
            began = time.perf_counter()
            try:
                chunk.extend(islice(self.iterator, n))  # keeps what came before an exception
            except Exception:
                self.error = traceback.format_exc()
            except gevent.GreenletExit:
                raise
            except BaseException as exc:  # not an Exception: the jobs before it still run
                self._crashed(exc)
            if self.exhausted:  # cut meanwhile (unpicklable job): drop what came after
                return
            if chunk:
                ledger.add(chunk)
                per_job = (time.perf_counter() - began) / len(chunk)
                chunk_size = max(1, min(FILL_CHUNK, 2 * chunk_size, int(FILL_SECONDS / max(per_job, 1e-9))))
            if len(chunk) < n or self.error:
                self.exhausted = True
                return
            gevent.sleep(0)

    def cut_at_unpicklable(self, jobs: list, ranges: list[list[int]]) -> tuple[list, list[list[int]]]:
        """Stop the run before the first job of a batch that cannot be pickled.

        Returns the jobs before it (and their ranges), which still run and are
        checkpointed; the master then exits with a message naming the job,
        and the same command resumes from there once get_jobs is fixed.
        """
        positions = expand(ranges)
        for index, job in enumerate(jobs):
            try:
                pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                position = positions[index]
                shown = f" ({short_repr(job)})" if self.job_repr else ""
                self.unpicklable_error = (
                    f"job at position {position} cannot be pickled{shown}: "
                    f"{type(exc).__name__}: {exc}; the jobs before it are finished and saved; make get_jobs "
                    "yield picklable jobs and run the same command to continue"
                )
                self.exhausted = True
                self.ledger.truncate(position)
                return jobs[:index], to_ranges(positions[:index])
        return jobs, ranges
