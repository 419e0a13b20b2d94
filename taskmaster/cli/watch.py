"""tm-status --watch: the status, again and again, until the run ends.

On a terminal the block is redrawn in place (cursor up, clear to the end of
the screen); elsewhere - a pipe, a file, ``TERM=dumb`` - each block is
printed after the last, under a line with the time, with no control
characters.  With --json, one JSON object per line.

The master answers for a moment after its run is over, and says how it
ended (``ended`` in the snapshot).  A watcher may ask too late for that: the
master is gone.  The state file then tells whether the run completed (its
path is in every snapshot; this works where the watcher can read it, e.g.
on the master's host).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import sys
import time
from typing import Any, TextIO

from taskmaster.cli import common
from taskmaster.cli.status import NO_ANSWER, RUN_FAILED, ask
from taskmaster.progress import can_draw

MAX_STATE_BYTES = 16 * 1024 * 1024  # a state file is a few lines (its last job may be long)
ASKS_BEFORE_GONE = 3  # a master busy for a moment is not gone: ask this many times in a row


class Screen:
    """Shows one block of text after another: in place on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.in_place = can_draw(stream)
        self.drawn = 0  # lines of the block on screen now

    def show(self, header: str, block: str) -> None:
        lines = [header, *block.splitlines()]
        if self.in_place:
            width = shutil.get_terminal_size().columns
            lines = [line[: width - 1] for line in lines]  # a wrapped line would throw the count of lines off
            up = f"\x1b[{self.drawn}F" if self.drawn else ""
            self.stream.write(up + "\x1b[J" + "\n".join(lines) + "\n")
            self.drawn = len(lines)
        else:
            self.stream.write(("\n" if self.drawn else "") + "\n".join(lines) + "\n")
            self.drawn = len(lines)
        self.stream.flush()


def verdict(snapshot: dict[str, Any]) -> tuple[int, str]:
    """The exit code and the words for a run that ended as `snapshot` says."""
    counts = f"{snapshot['finished']} finished, {snapshot['failed']} failed"
    ended = snapshot.get("ended")
    if ended == "complete":
        if snapshot["failed"]:
            return RUN_FAILED, f"the run is over: {counts}; failed jobs are in {snapshot['failures_file']}"
        return 0, f"the run is over: {counts}"
    if ended == "interrupted":
        return NO_ANSWER, f"the master was stopped before the run was over ({counts}); run its command again to resume"
    return RUN_FAILED, f"the run ended: {ended} ({counts}); the master's output says why"


def read_state_file(path: str) -> Any:
    """The JSON in the regular file at `path`; OSError for anything else.

    The path comes from whatever answered at the address: never block on a
    FIFO, read a device or follow a last symbolic link on its word
    (O_NONBLOCK, O_NOFOLLOW, then fstat), nor read more than a state file holds.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        data = f.read(MAX_STATE_BYTES + 1)
    if len(data) > MAX_STATE_BYTES:
        raise ValueError("too large for a state file")
    return json.loads(data)


def from_state_file(last: dict[str, Any], authenticated: bool = True) -> tuple[int, str]:
    """The outcome of a run whose master went away before we heard how it ended.

    Only a master that proved it holds the secret names a file we open:
    with --insecure anyone could have answered.
    """
    if not authenticated:
        return NO_ANSWER, (
            "the master went away before saying how its run ended, and with --insecure its state file is not "
            "read (anyone could have named it): its run may not be over; if so, run its command again to resume"
        )
    try:
        state = read_state_file(last["state_file"])
        complete, finished, failed = bool(state["complete"]), int(state["finished"]), int(state["failed"])
    except OSError as exc:
        return NO_ANSWER, (
            f"the master went away and its state file {last['state_file']} cannot be read here "
            f"({exc.strerror or exc}): its run may not be over; if so, run its command again to resume"
        )
    except (ValueError, KeyError, TypeError):
        return NO_ANSWER, f"the master went away and its state file {last['state_file']} makes no sense"
    if not complete:
        return NO_ANSWER, (
            f"the master went away before its run was over ({finished} finished, {failed} failed, "
            "as of its last checkpoint); run its command again to resume"
        )
    return verdict({**last, "ended": "complete", "finished": finished, "failed": failed})


def watch(prog: str, address: str, timeout_ms: int, keys: Any, seconds: float, as_json: bool) -> int:
    """Show the status every `seconds` until the run ends; its outcome as an exit code."""
    from taskmaster.master import status

    screen = Screen(sys.stdout)
    last: dict[str, Any] | None = None
    unanswered = 0
    while True:
        started = time.monotonic()
        snapshot = ask(address, timeout_ms, keys)
        if snapshot is None:
            unanswered += 1
            if last is None:
                common.say(prog, f"no master answered at {address} within {timeout_ms} ms")
                return NO_ANSWER
            code, words = from_state_file(last, authenticated=keys is not None)
            if code == NO_ANSWER and unanswered < ASKS_BEFORE_GONE:
                continue  # busy, or gone? ask again before saying
            common.say(prog, words, exit_code=code)
            return code
        unanswered = 0
        last = snapshot
        if as_json:
            sys.stdout.write(json.dumps(snapshot) + "\n")
            sys.stdout.flush()
        else:
            header = f"{address}, every {seconds:g}s: {time.strftime('%H:%M:%S')}"
            screen.show(header, status.render(snapshot))
        if snapshot.get("ended"):
            code, words = verdict(snapshot)
            common.say(prog, words, exit_code=code)
            return code
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
