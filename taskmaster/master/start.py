"""Where a run starts: afresh, from the state file (a resume), or from the failures file (a replay).

Nothing is written here: a state file that cannot be used raises UsageError
before the run changes anything, and a run that is already over says so
(an ``Outcome``) without starting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from taskmaster import fileio
from taskmaster.master import checkpoint
from taskmaster.master.identity import FinishedBefore
from taskmaster.master.ledger import Ledger
from taskmaster.master.outcome import Outcome
from taskmaster.master.source import JobSource
from taskmaster.master.window import window_of
from taskmaster.wire.ranges import expand

if TYPE_CHECKING:
    from taskmaster.config import MasterConfig
    from taskmaster.master.failures_file import FailedJobs

log = logging.getLogger("taskmaster.master")


class Opened(NamedTuple):
    """A run ready to serve."""

    ledger: Ledger
    source: JobSource
    resumed_from: checkpoint.State  # what earlier runs did (a fresh State for a fresh start)
    total: int | None  # jobs in the run, if known: percent done and ETA


def open_run(
    config: MasterConfig,
    fresh: checkpoint.State,
    get_jobs: Callable[..., Any],
    count_jobs: Callable[..., Any] | None,
    failed_jobs: FailedJobs,
) -> Opened | Outcome:
    """Load the state and open the iterator; an Outcome if there is nothing to run.

    `fresh` is the state of a run that starts from the beginning.  Raises
    UsageError (before anything is written) for a bad state file.
    """
    if not config.retry_failed:
        fileio.check_writable(config.state_path, "state file", "--state-file")
    fileio.check_writable(config.failures_path, "failures file", "--failures-file")
    if config.retry_failed:
        jobs = failed_jobs.start_replay()
        if not jobs:
            return Outcome(0, f"no failed jobs to retry in {config.failures_path}", over=True)
        size, stretch = window_of(config.size)
        ledger = Ledger(size, stretch=stretch)
        source = JobSource(ledger)
        source.serve(jobs)
        return Opened(ledger, source, fresh, len(jobs))
    state = None if config.reset else checkpoint.load(config.state_path, fresh.target, fresh.kwargs)
    if state is not None and state.complete:
        return _already_finished(config, state, failed_jobs)
    if state is None and not config.reset:
        _name_unfinished_neighbours(config.state_path, fresh.target, fresh.kwargs)
    base = state if state is not None and state.has_anchor else fresh
    size, stretch = window_of(config.size)
    start, before = (base.position, _finished_before(base, size * stretch)) if base.has_anchor else (0, None)
    ledger = Ledger(size, start=start, before=before, stretch=stretch)
    source = JobSource(ledger)
    if base.has_anchor:
        source.open(get_jobs, fresh.kwargs, last=base.anchor)
    else:
        source.open(get_jobs, fresh.kwargs)
    total = _count(count_jobs, fresh.kwargs, base.total) if config.total is None else config.total
    base.total = total
    return Opened(ledger, source, base, total)


def _finished_before(state: checkpoint.State, window: int) -> FinishedBefore:
    """What the earlier run resolved after its anchor, known by fingerprint (see taskmaster.identity)."""
    positions = expand(state.resolved)
    if len(state.prints) != len(positions):
        # A state file from before fingerprints: positions alone do not say
        # which jobs finished, so none is skipped.
        log.warning(
            "the state file names %d jobs resolved after job %d by position only (an older taskmaster): "
            "they run again",
            len(positions),
            state.position,
        )
        return FinishedBefore([], [], window)
    return FinishedBefore(positions, state.prints, window)


def _already_finished(config: MasterConfig, state: checkpoint.State, failed_jobs: FailedJobs) -> Outcome:
    still_failed = len(failed_jobs.file.read()) if os.path.exists(config.failures_path) else 0
    if still_failed:
        # Not a success to report as one: jobs failed for good and wait in the file.
        return Outcome(
            1,
            f"this run already finished, but {still_failed} jobs failed for good; they are in "
            f"{config.failures_path}: run them again with --retry-failed (or start over with --reset)",
            over=True,
        )
    return Outcome(
        0,
        f"this run already finished ({state.finished} jobs finished, {state.failed} failed, "
        f"state file {config.state_path}); use --reset to run it again",
        over=True,
    )


def _name_unfinished_neighbours(path: str, target: str, kwargs: dict[str, str]) -> None:
    """A new run starts: one line about an unfinished run of the same target beside it, if any.

    A run is its state file, named after the target as written and its
    key=value arguments, in the current directory: change any of them and a
    new run starts, which is easy to do by mistake.
    """
    others = checkpoint.unfinished_beside(path, target, kwargs)
    if not others:
        return
    other, other_target, other_kwargs = others[0]
    more = f" (and {len(others) - 1} more such state files)" if len(others) > 1 else ""
    log.warning(
        "a new run starts in %s; beside it, %s holds an unfinished run of %s with %s%s: to resume it, "
        "give that target and those arguments (a run is identified by the target as written, its key=value "
        "arguments and the directory of its state file)",
        path,
        other,
        other_target,
        checkpoint.args_text(other_kwargs),
        more,
        extra={"event": "unfinished_run_beside", "state_file": other},
    )


def _count(count_jobs: Callable[..., Any] | None, kwargs: dict[str, str], known: int | None) -> int | None:
    """The user's count_jobs(**kwargs), if any: makes percent done and ETA possible."""
    if count_jobs is None:
        return known
    try:
        return int(count_jobs(**kwargs))
    except Exception as exc:
        log.warning("count_jobs failed (%s: %s): no ETA for this run", type(exc).__name__, exc)
        return None
