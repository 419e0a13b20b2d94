"""A slave's greenlet pool: the batches it holds and the workers that run them.

Workers are long-lived greenlets that take jobs in order from the batches
received, run the handler, and mark each job finished in its batch (one byte
per job).  The request loop (``slave``) only asks this pool how much is left,
and collects what to report.

Jobs not started yet can be given back (``give_back``) from the slave's
liveness thread, a real OS thread, while a handler that never yields holds
the main one.  Workers claim jobs and the liveness thread cuts them off
under one real lock, so each job is either started here or given back.
What else that thread touches, and how each is guarded, is listed in
``taskmaster.heartbeat``.

A job past --job-timeout gets JobTimeout, a BaseException like
gevent.Timeout, so that a handler's ``except Exception:`` (a retry loop)
cannot swallow it; one that swallows even that gets it again every
--job-timeout until it gives up.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
from gevent import monkey

from taskmaster.text import short_repr
from taskmaster.wire import protocol
from taskmaster.wire.ranges import position_at, positions_of

log = logging.getLogger("taskmaster.slave")

YIELD_EVERY = 256  # a worker running fast jobs yields this often
YIELD_SECONDS = 0.001  # ... and at least this often: the request loop acknowledges between two slow jobs
MAX_CLAIM = 256  # jobs a worker takes at once, at most
FAST_JOB_SECONDS = 50e-6  # jobs faster than this on average are claimed several at a time
# Tracebacks can be large (64 KB each at most): the failures of one report
# are cut at this many bytes, as sent, well below what the master reads
# (protocol.MAX_INBOUND_BYTES) - but as many as fit, at least one: at 20 a
# report, a run where many jobs failed reported them seconds after they
# failed, and a --max-failures halt came that late and waited for them.
FAILURE_BYTES_PER_REPORT = 1024 * 1024
WATCHDOG_SIGNAL = signal.SIGUSR2  # interrupts a job past --job-timeout that never yields
WATCHDOG_SLACK = 0.2  # seconds the timer (for a job that yields) gets to act first
_FINISHED_RUNS = re.compile(rb"\x01+")
MAX_ERRORS_REMEMBERED = 1000  # distinct errors whose traceback was logged: more are logged whole


class JobTimeout(BaseException):
    """The job ran longer than --job-timeout.

    Not an Exception: a handler that retries on ``except Exception:`` would
    swallow it and never end.
    """


class _Watch:
    """A job running under --job-timeout, as the watchdog sees it.

    Written in the main thread only (the worker, the timer, the signal
    handler); the liveness thread only reads it.
    """

    __slots__ = ("due", "done")

    def __init__(self, due: float) -> None:
        self.due = due  # monotonic time from which JobTimeout is due (again)
        self.done = False  # its handler returned or raised: nothing may be raised into it any more


def user_traceback(exc: BaseException) -> str:
    """The traceback of a job's exception from the user's first frame on.

    The frames above it are this module's worker loop, the same for every
    failure: they would only push the user's own lines out of view (and off
    the end of a traceback cut to MAX_TEXT_CHARS).  Only this module's frames
    are skipped, so a handler that lives in the taskmaster package (the
    example) still shows.  Nothing of the user's (a timeout between two
    jobs): the whole traceback.  A JobTimeout ends at the user's last frame:
    below it are gevent's hub, where the handler waited (about ten lines),
    or the watchdog's signal handler, the same for every timeout.
    """
    tb = first = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    tb = tb or first
    limit = None
    if isinstance(exc, JobTimeout):
        frame, depth = tb, 0
        while frame is not None:
            depth += 1
            module = frame.tb_frame.f_globals.get("__name__") or ""
            if module != __name__ and module != "gevent" and not module.startswith("gevent."):
                limit = depth  # the user's deepest frame so far
            frame = frame.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb, limit=limit))


class LocalBatch:
    """Jobs of one batch: workers take them in order and mark them finished.

    ``finished`` holds one byte per job, so that the ranges to acknowledge
    are found at C speed; each report acknowledges every job of the batch
    finished so far (the master ignores what it already knows), so a lost
    report costs nothing.
    """

    __slots__ = ("id", "run", "ranges", "jobs", "cursor", "end", "finished", "dirty")

    def __init__(self, batch_id: int, run: str, ranges: list[list[int]], jobs: list) -> None:
        self.id = batch_id
        self.run = run
        self.ranges = ranges
        self.jobs = jobs
        self.cursor = 0  # the next job to start
        self.end = len(jobs)  # jobs from here on were given back: never started here
        self.finished = bytearray(len(jobs))
        self.dirty = False  # finished jobs not reported yet

    def position(self, index: int) -> int:
        return position_at(self.ranges, index)

    def acknowledgement(self) -> list:
        runs = [(m.start(), m.end()) for m in _FINISHED_RUNS.finditer(self.finished)]
        return [self.id, positions_of(runs, self.ranges)]


class WorkerPool:
    def __init__(
        self, handle_job: Callable[[Any], Any], concurrency: int, job_timeout: float | None, job_repr: bool = True
    ) -> None:
        self.handle_job = handle_job
        self.concurrency = concurrency
        self.job_timeout = job_timeout
        self.job_repr = job_repr  # False: a failed job is logged by position only (its repr may hold secrets)
        self.todo: deque[LocalBatch] = deque()
        self.touched: list[LocalBatch] = []  # batches with finished jobs not yet reported
        self.unconfirmed: list[LocalBatch] = []  # acknowledged by an ACK only: the next report says it again
        self.failures: list[tuple[str, protocol.Failure]] = []
        self.unconfirmed_failures: list[tuple[str, protocol.Failure]] = []  # sent in an ACK: said again next report
        self.cuts: list[tuple[str, list[int]]] = []  # (run, [batch, keep]) given back, not yet reported
        # Batches numbered up to this were all recalled (a pause, a halt): one
        # still on its way then is given back whole as it arrives.
        self.recalled_upto = 0
        # Workers claim jobs and give_back (another thread) cuts them off under this lock.
        self.claim_lock = monkey.get_original("_thread", "allocate_lock")()
        self.running = 0
        self.resolved = 0  # jobs run to their end, finished or failed
        self.failed = 0
        self.errors_seen: dict[tuple[str, int], list[int]] = {}  # (class, frames) -> [first job, attempts]
        self.job_seconds = 0.0  # a job's wall time, averaged over recent jobs
        self.busy_seconds = 0.0  # time with at least one job running
        self._busy_since = 0.0
        self.idle_since: float | None = None  # when the pool last ran out of jobs, if it has none now
        self.accepting = True  # False once the slave stops: running jobs finish, no new ones start
        self.work_ready = gevent.event.Event()  # workers: jobs arrived
        # Wake the request loop: running_low when a batch was used up or the
        # pool holds few jobs (time to ask for more, see low_water below);
        # news also when there is something new to report (the first job of a
        # batch finished since the last report, a failure).  The loop waits on
        # them rather than looking every few milliseconds, which cost a slave
        # a share of a core while its jobs waited on a database or a sleep.
        # (Not on every job: waking it that often cost no-op runs more; see
        # docs/performance.rst, "Waking the request loop".)
        self.running_low = gevent.event.Event()
        self.news = gevent.event.Event()
        # Set by the request loop: once the jobs held (running and queued)
        # fall to this many, a finished job wakes it (running_low) to ask for
        # more - rather than at its next look, a report's spacing later.
        self.low_water = 0
        self.error = ""  # a worker crashed: a bug in taskmaster itself
        # worker greenlet -> its current job's watch (only with a job timeout)
        self.watched: dict[Any, _Watch] = {}
        self.workers: list[gevent.Greenlet] = []
        self.main_thread = monkey.get_original("_thread", "get_ident")()  # the OS thread, not a greenlet

    def start(self) -> None:
        if self.job_timeout:
            signal.signal(WATCHDOG_SIGNAL, self._on_watchdog_signal)
        self.workers = [gevent.spawn(self._work) for _ in range(self.concurrency)]
        for worker in self.workers:
            worker.link_exception(self._worker_died)

    def kill(self) -> None:
        gevent.killall(self.workers, timeout=1)

    def _worker_died(self, worker: gevent.Greenlet) -> None:
        """Stop the slave rather than hang with fewer workers."""
        self.error = f"internal error in a worker: {worker.exception!r}"

    # ------------------------------------------------------------ batches

    def add(self, batch: LocalBatch) -> float:
        """Queue a batch; how long the pool had sat idle, with nothing to run, before it came.

        A batch the master recalled while it was on its way is given back
        whole instead, none of it started: the next report says so.
        """
        with self.claim_lock:  # the liveness thread may be going through the queue
            recalled = batch.id <= self.recalled_upto
            if recalled:
                batch.end = 0  # none of it is ours to run: whoever holds the batch sees so
                self.cuts.append((batch.run, [batch.id, 0]))
            else:
                self.todo.append(batch)
        if recalled:
            self.news.set()
            return 0.0
        self.work_ready.set()
        idle_since, self.idle_since = self.idle_since, None
        return 0.0 if idle_since is None else time.perf_counter() - idle_since

    def queued(self) -> int:
        """Jobs received and not started (gevent thread only: the queue changes in this thread alone)."""
        return sum(batch.end - batch.cursor for batch in self.todo)

    def waiting(self) -> list[list[int]]:
        """[batch, next, end] for each batch with jobs not started: for the master's choice of whom to recall."""
        with self.claim_lock:
            return self._waiting()

    def _waiting(self) -> list[list[int]]:
        # With claim_lock held: the gevent thread changes the queue only under it.
        return [[b.id, b.cursor, b.end] for b in self.todo if b.cursor < b.end]

    def has_unreported(self) -> bool:
        """Is there anything for the next report: finished jobs, failures (also an ACK's), jobs given back?"""
        return bool(self.touched or self.failures or self.unconfirmed_failures or self.cuts)

    def take_acks(self, run: str) -> tuple[list, list[protocol.Failure]]:
        """Acknowledgements and failures for an ACK: they stay due for the next report (an ACK may be lost)."""
        acks = [batch.acknowledgement() for batch in self.touched if batch.run == run]
        for batch in self.touched:
            batch.dirty = False
        self.unconfirmed += self.touched
        self.touched = []
        n = self._failures_that_fit()
        sent, self.failures = self.failures[:n], self.failures[n:]
        self.unconfirmed_failures += sent
        return acks, [f for r, f in sent if r == run]

    def take_report(self, run: str) -> tuple[list, list[protocol.Failure], list[list[int]]]:
        """What to tell the master of `run`: acknowledgements, failures and jobs given back."""
        batches = {id(batch): batch for batch in self.unconfirmed + self.touched}.values()
        acks = [batch.acknowledgement() for batch in batches if batch.run == run]
        for batch in self.touched:
            batch.dirty = False
        self.touched, self.unconfirmed = [], []
        # The failures an ACK carried come again, first (the report must not lose them).
        self.failures[:0], self.unconfirmed_failures = self.unconfirmed_failures, []
        n = self._failures_that_fit()
        failures = [f for r, f in self.failures[:n] if r == run]
        del self.failures[:n]
        with self.claim_lock:
            cuts, self.cuts = self.cuts, []
        return acks, failures, [cut for r, cut in cuts if r == run]

    def _failures_that_fit(self) -> int:
        """How many of the failures waiting go in the next report: FAILURE_BYTES_PER_REPORT's worth, at least one."""
        n = size = 0
        for _, failure in self.failures[: protocol.MAX_FAILURES]:
            size += len(json.dumps(failure._asdict()))
            if n and size > FAILURE_BYTES_PER_REPORT:
                break
            n += 1
        return n

    def give_back(self, want: int, upto: int | None = None) -> tuple[list[list[int]], list[list[int]]]:
        """Cut up to `want` jobs not started off the tail of the batches held.

        Returns the cuts, ``[[batch, keep], ...]``, and what still waits
        after them (as ``waiting``).  With `upto`, batches numbered up to it
        that arrive later are given back whole (``add``).

        Called from the liveness thread: a worker cannot claim a job while
        this holds the lock, and none claims past a batch's new end after.
        """
        cuts: list[list[int]] = []
        with self.claim_lock:
            if upto is not None:
                self.recalled_upto = max(self.recalled_upto, upto)
            for batch in reversed(list(self.todo)):
                spare = min(batch.end - batch.cursor, want)
                if spare > 0:
                    batch.end -= spare
                    want -= spare
                    cuts.append([batch.id, batch.end])
                    self.cuts.append((batch.run, [batch.id, batch.end]))
                if want == 0:
                    break
            return cuts, self._waiting()

    def forget(self) -> None:
        """A RESET: drop the jobs not started (the master takes them back at our next hello).

        What finished, failed or was given back stays due: a report carries
        only what belongs to the run it goes to (``take_report``), so a new
        run hears nothing of the old one, while a master that only lost
        track of this slave (the same run) still learns which of its jobs
        finished, also those running through the RESET, instead of running
        them again.  (Dropping the batches due left them ``dirty``: never
        due again, their jobs were never acknowledged.)
        """
        with self.claim_lock:
            self.todo.clear()
            self.recalled_upto = 0  # the next run numbers its batches afresh

    # ------------------------------------------------------------ workers

    def _next_batch(self) -> LocalBatch | None:
        todo = self.todo
        while todo:
            batch = todo[0]
            if batch.cursor < batch.end:
                return batch
            with self.claim_lock:
                todo.popleft()
            self.running_low.set()
            self.news.set()
        return None

    def _work(self) -> None:
        """Run jobs until killed, claiming more than one at a time while they are fast.

        A claim of several jobs runs them in a tight loop, which is most of
        what a no-op job costs otherwise; it only grows while jobs take under
        FAST_JOB_SECONDS each, so slow or blocking jobs are still spread over
        all the workers one at a time.
        """
        claim = 1
        since_yield = 0
        last_yield = time.perf_counter()
        lock = self.claim_lock
        while True:
            batch = self._next_batch() if self.accepting else None
            if batch is None:
                if not self.running and self.idle_since is None:
                    self.idle_since = time.perf_counter()
                self.work_ready.clear()
                self.work_ready.wait()
                last_yield = time.perf_counter()
                continue
            with lock:
                start = batch.cursor
                end = min(start + claim, batch.end)
                batch.cursor = end
            if start >= end:
                continue  # given back meanwhile
            began = time.perf_counter()
            if self.job_timeout is None:
                self._run(batch, start, end)
            else:
                self._run_with_timeout(batch, start)
            now = time.perf_counter()
            per_job = (now - began) / (end - start)
            self.job_seconds = per_job if not self.job_seconds else 0.8 * self.job_seconds + 0.2 * per_job
            if self.job_timeout is None:
                claim = min(claim * 2, MAX_CLAIM) if per_job < FAST_JOB_SECONDS else 1
            since_yield += end - start
            if since_yield >= YIELD_EVERY or now - last_yield >= YIELD_SECONDS:
                # Let the request loop acknowledge, ask for more and read
                # answers between two jobs, also when jobs never yield.
                since_yield = 0
                gevent.sleep(0)
                last_yield = time.perf_counter()

    def _run(self, batch: LocalBatch, start: int, end: int) -> None:
        """Run the jobs [start, end) of `batch` and mark each finished or failed.

        The inner loop is as bare as Python allows - for no-op jobs it is
        most of a slave's work.  Each job is marked as soon as it finishes:
        should a later one in the chunk block for a long time, the report
        that goes out meanwhile acknowledges the ones before it.
        """
        handle, jobs, finished = self.handle_job, batch.jobs, batch.finished
        if not self.running:
            self._busy_since = time.perf_counter()
        self.running += end - start
        index = start
        try:
            while index < end:
                try:
                    for job in jobs[index:end]:
                        handle(job)
                        finished[index] = 1
                        index += 1
                        if not batch.dirty:  # the first news of this batch since the last report
                            batch.dirty = True
                            self.touched.append(batch)
                            self.news.set()
                except Exception as exc:
                    self._record_failure(batch, index, jobs[index], exc)
                    index += 1
        finally:
            self.running -= end - start
            self.resolved += index - start
            self._finished_some()

    def _run_with_timeout(self, batch: LocalBatch, index: int) -> None:
        """Run one job under --job-timeout: a timer for a job that yields, the watchdog for one that never does.

        Either raises JobTimeout into the handler and nothing else.  The
        timer fires only while the worker waits inside the handler (nothing
        here yields while a job is watched); the watchdog's signal handler
        raises only into the greenlet whose job it watches, only while its
        handler runs (``done`` is set as soon as it returns or raises) and
        never into a frame of this module, where the signal may land after
        the handler returned and before ``done`` is set: a success must not
        turn into a timeout, and a signal must land neither in the recording
        of the failure (counting it twice) nor in this loop (killing the
        worker).  Both raise again every --job-timeout while the handler
        swallows JobTimeout, so the job ends once the handler gives up.
        """
        me = gevent.getcurrent()
        job = batch.jobs[index]
        timeout = self.job_timeout
        assert timeout is not None
        if not self.running:
            self._busy_since = time.perf_counter()
        self.running += 1
        watch = _Watch(time.monotonic() + timeout)
        timer = gevent.get_hub().loop.timer(timeout, timeout)
        try:
            try:
                with self.claim_lock:  # the watchdog, in the liveness thread, lists the watches
                    self.watched[me] = watch
                timer.start(self._on_timer, me, watch, update=True)
                try:
                    self.handle_job(job)
                finally:
                    watch.done = True
                    timer.close()
            except (Exception, JobTimeout) as exc:
                self._record_failure(batch, index, job, exc)
            else:
                batch.finished[index] = 1
                if not batch.dirty:
                    batch.dirty = True
                    self.touched.append(batch)
                    self.news.set()
        finally:
            with self.claim_lock:
                self.watched.pop(me, None)
            self.running -= 1
            self.resolved += 1
            self._finished_some()

    def _on_timer(self, worker: gevent.Greenlet, watch: _Watch) -> None:
        """In the hub, while `worker` waits inside its handler: JobTimeout into it if it is due."""
        now = time.monotonic()
        timeout = self.job_timeout or 0.0
        # Half a period of leeway: the loop's clock may run a little ahead
        # of time.monotonic; a signal that raised it meanwhile set a later due.
        if watch.done or now < watch.due - timeout / 2:
            return
        watch.due = now + timeout
        worker.throw(_timed_out(timeout))

    def _finished_some(self) -> None:
        """After jobs ended: count the busy time, and wake the request loop if the pool runs low."""
        if not self.running:
            self.busy_seconds += time.perf_counter() - self._busy_since
        if self.running + self.queued() <= self.low_water:
            self.running_low.set()

    def _record_failure(self, batch: LocalBatch, index: int, job: Any, exc: BaseException) -> None:
        position = batch.position(index)
        text = user_traceback(exc)
        shown = f"{position} ({short_repr(job)})" if self.job_repr else str(position)
        # A traceback once per error - its class and frames: the message
        # often names the job - then one line with a count: a job retried, or
        # one bug hitting many jobs, would repeat the same frames for every
        # attempt (thousands of lines, a JobTimeout's gevent frames too).
        message = str(exc)
        head, _, tail = text.rpartition(message) if message else ("", "", text)
        key = (type(exc).__name__, hash(head + tail))
        first = self.errors_seen.get(key)
        if first is None and len(self.errors_seen) < MAX_ERRORS_REMEMBERED:
            self.errors_seen[key] = first = [position, 0]
        repeat = 1 if first is None else first[1] + 1
        if first is not None:
            first[1] = repeat
        fields = {"event": "job_error", "position": position, "error": type(exc).__name__, "repeat": repeat}
        if repeat == 1:
            log.error("job %s failed:\n%s", shown, text.rstrip(), extra=fields)
        else:
            log.error(
                "job %s failed: %s: %.200s (traceback as for job %d above; %d times so far)",
                shown,
                key[0],
                message,
                first[0],
                repeat,
                extra=fields,
            )
        self.failed += 1
        limit = protocol.MAX_TEXT_CHARS
        failure = protocol.Failure(batch.id, position, type(exc).__name__[:limit], str(exc)[:limit], text[-limit:])
        self.failures.append((batch.run, failure))
        self.news.set()

    # ------------------------------------------------------------ watchdog

    def interrupt_overdue_job(self) -> None:
        """Watchdog, called from the heartbeat thread: stop a job that never yields.

        The timer only fires when the handler yields to the hub; a job
        that computes without yielding is interrupted by a signal instead,
        whose Python handler runs in the main thread, in that job's greenlet.
        Sent again each step while the job is overdue: the handler raises
        only when JobTimeout is due, and not into the pool's own code.
        """
        if not self.job_timeout:
            return
        now = time.monotonic()
        with self.claim_lock:  # the main thread adds and removes watches under it
            watches = list(self.watched.values())
        if any(not w.done and now > w.due + WATCHDOG_SLACK for w in watches):
            signal.pthread_kill(self.main_thread, WATCHDOG_SIGNAL)

    def _on_watchdog_signal(self, signum: int, frame: Any) -> None:
        watch = self.watched.get(gevent.getcurrent())
        if watch is None or watch.done or not self.job_timeout:
            return  # not inside a watched handler: nothing to stop here
        if frame is not None and frame.f_code.co_filename == __file__:
            # The pool's own code runs: the handler has returned (and
            # ``done`` is set next) or has not begun.  Never raise here.
            return
        now = time.monotonic()
        if now >= watch.due:
            watch.due = now + self.job_timeout
            raise _timed_out(self.job_timeout)


def _timed_out(timeout: float) -> JobTimeout:
    return JobTimeout(f"job ran longer than --job-timeout {timeout}s")
