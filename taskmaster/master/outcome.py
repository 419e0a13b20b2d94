"""How a run ended, and what its user is told: the exit code, one summary line, an error.

The master's loop only decides *that* the run ended and why (an
``EndReason``); the words and the exit code are built here, from the counts
the run kept, so that they can be read (and tested) in one place.

Exit codes: 0 every job finished; 1 some job failed for good, the run was
halted (--max-failures), get_jobs raised, or a file could not be written;
2 a job could not be pickled (bad input, as for every usage error);
128+N the run was stopped by signal N (or tm-ctl stop, as SIGTERM).
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass
from typing import NamedTuple


class EndReason(enum.Enum):
    """Why the run ended.  The value is what tm-status shows as ``ended``."""

    COMPLETE = "complete"  # every job finished or failed for good
    INTERRUPTED = "interrupted"  # a signal or tm-ctl stop (or a disk error): resumable
    HALTED = "halted"  # more jobs failed than --max-failures allows
    SOURCE_ERROR = "source-error"  # get_jobs raised
    UNPICKLABLE = "unpicklable"  # get_jobs yielded a job that cannot be pickled: the run is cut before it


@dataclass
class Outcome:
    """How a run ended: the exit code and what to tell the user."""

    code: int
    summary: str = ""
    error: str = ""
    finished: int = 0
    failed: int = 0
    duration: float = 0.0
    served: bool = False  # the master listened and told its slaves when to quit
    # Nothing is left to run: every job finished or failed for good (also a
    # run found already over).  False when the same command resumes the run.
    over: bool = False


class Tally(NamedTuple):
    """What the end of a served run is summed up from."""

    finished: int  # jobs finished in this run of the master
    failed: int  # ... and failed for good
    duration: float  # seconds from the start to the end of the run (not the goodbyes after it)
    finished_overall: int  # finished, also in the runs this one resumed
    any_failed: bool  # some job failed for good, now or in an earlier run
    bad_messages: int = 0  # malformed messages ignored
    refusals: int = 0  # connections refused (secrets differ)
    foreign_tokens: int = 0  # messages with a slave's token from another connection, refused


class EndDetail(NamedTuple):
    """What the run knows about its end beyond the counts."""

    failures_path: str
    state_path: str | None  # None for a replay of failures, which writes no progress there
    stop_signal: int | None = None  # the signal that stopped the run
    halt_reason: str | None = None  # why --max-failures halted it
    source_error: str | None = None  # get_jobs's traceback
    source_crash: str | None = None  # what stopped the job source, when it was no Exception of get_jobs
    unpicklable_error: str | None = None  # which job could not be pickled, and what to do
    problem: str | None = None  # a file that could not be written


def summary_line(tally: Tally, detail: EndDetail) -> str:
    """Counts, pace and where things are: the line every served run ends with."""
    pace = tally.finished / max(tally.duration, 1e-9)
    summary = f"{tally.finished} finished, {tally.failed} failed in {tally.duration:.1f}s ({pace:.0f} jobs/s)"
    if tally.any_failed:
        summary += f"; failed jobs are in {detail.failures_path} (replay them with --retry-failed)"
    if tally.bad_messages:
        summary += f"; {tally.bad_messages} malformed messages ignored"
    if tally.refusals:
        summary += f"; {tally.refusals} connections refused"
    if tally.foreign_tokens:
        summary += f"; {tally.foreign_tokens} messages with a token from another connection refused"
    if detail.state_path is not None:
        summary += f"; state in {detail.state_path}"
    return summary


def build(reason: EndReason, tally: Tally, detail: EndDetail) -> Outcome:
    """The Outcome of a run that was served and ended for `reason`."""
    summary = summary_line(tally, detail)
    outcome = Outcome(
        1 if tally.any_failed else 0,
        summary,
        finished=tally.finished,
        failed=tally.failed,
        duration=tally.duration,
        served=True,
        over=reason is EndReason.COMPLETE,
    )
    if reason is EndReason.INTERRUPTED:
        outcome.code = 128 + (detail.stop_signal or signal.SIGINT)
        outcome.summary = f"interrupted: {tally.finished_overall} finished, run the same command to resume ({summary})"
    elif reason is EndReason.HALTED:
        outcome.code = 1
        outcome.summary = (
            f"halted: {detail.halt_reason}; fix the cause and run the same command to continue ({summary})"
        )
    elif reason is EndReason.SOURCE_ERROR:
        outcome.code = 1
        crash = detail.source_crash
        what = f"the job source stopped on {crash}" if crash else "get_jobs raised an exception"
        outcome.error = f"{what}; fix it and run the same command to resume:\n{(detail.source_error or '').rstrip()}"
    elif reason is EndReason.UNPICKLABLE:
        outcome.code, outcome.error = 2, detail.unpicklable_error or ""
    if detail.problem and not outcome.error:
        # Nothing is lost: every file still holds its last good contents,
        # which at worst makes the next run redo some jobs.
        outcome.code, outcome.over = 1, False
        outcome.error = f"{detail.problem}; fix that and run the same command to resume"
    return outcome
