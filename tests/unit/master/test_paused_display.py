"""A paused master says so: on its progress line, and in tm-status with its rate limit and halt threshold."""

from __future__ import annotations

import io

from taskmaster.master.control import describe
from taskmaster.master.status import control_lines
from taskmaster.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_plain_progress_line_starts_with_paused_while_paused():
    progress = Progress(True, show_queue=True, stream=io.StringIO())
    progress.update(10, "5/100", 10, paused=True)
    assert progress.line().startswith("PAUSED | completed 10 | in queue 5/100 | ")
    progress.update(20, "5/100", 20, paused=False)
    assert progress.line().startswith("completed 20 | ")


def test_the_drawn_line_on_a_terminal_says_paused_while_paused():
    stream = Terminal()
    progress = Progress(True, show_queue=True, stream=stream)
    progress.update(10, "5/100", 10, paused=True)
    progress.bar.update(10, force=True)
    assert "\rPAUSED | completed 10" in stream.getvalue()
    progress.update(11, "5/100", 11, paused=False)
    progress.finish()
    assert stream.getvalue().rsplit("\r", 1)[1].startswith("completed 11")


def test_tm_status_lines_for_the_live_settings():
    shown = control_lines({"paused": True, "rate_limit": 250.0, "max_failures": "5%", "halted": None})
    assert shown == [
        "paused      yes: no new job starts (tm-ctl resume)",
        "rate limit  250 jobs/s",
        "halt after  more than 5% failed",
    ]
    shown = control_lines({"paused": False, "rate_limit": None, "max_failures": None, "halted": "12 jobs failed"})
    assert shown == [
        "paused      no",
        "rate limit  none",
        "halt after  never (no --max-failures)",
        "halted      12 jobs failed",
    ]


def answer(**changes) -> dict:
    doc = {
        "command": "pause",
        "state": "paused",
        "paused": True,
        "rate_limit": None,
        "max_failures": None,
        "halted": None,
        "stopping": False,
        "finished": 10,
        "failed": 1,
        "in_flight": 3,
        "unsettled_slaves": 0,
    }
    doc.update(changes)
    return doc


def test_tm_ctl_answers_in_one_line():
    assert describe(answer()) == (
        "paused: no new job starts; the 3 jobs in flight finish (tm-ctl resume to go on) | rate limit none | "
        "halt after never | 10 finished, 1 failed, 3 in flight"
    )
    assert "2 slaves did not give back their unstarted jobs in time" in describe(answer(unsettled_slaves=2))
    running = describe(answer(command="rate", paused=False, state="running", rate_limit=250.0, max_failures="5%"))
    assert running.startswith("running | rate limit 250 jobs/s | halt after more than 5% failed | ")
    assert describe(answer(command="stop", stopping=True)).startswith("stopping: waiting for the 3 jobs in flight")
    assert describe(answer(command="resume", paused=False, stopping=True)).startswith("stopping: ")
    assert describe(answer(halted="12 jobs failed")).startswith("halting (12 jobs failed): ")
    assert describe(answer(state="finished")).startswith("the run is over | ")
    assert "\n" not in describe(answer(unsettled_slaves=2))
