"""What a person watching a run sees: a progressbar2 line, or plain log lines.

On a terminal, a live progressbar2 line on stderr.  When stderr is not a
terminal (a log file, CI, a pipe), no control characters at all: a plain log
line every few seconds instead.
"""

from __future__ import annotations

import logging
import sys
import time

import progressbar

log = logging.getLogger("taskmaster.progress")

LOG_EVERY_SECONDS = 10.0


def _rate_text(rate: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.1f}{unit} jobs/s"
    return f"{rate:.1f} jobs/s"


def _elapsed_text(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress of one process: completed jobs, rate, elapsed, queue if any."""

    def __init__(self, enabled: bool, show_queue: bool, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.show_queue = show_queue
        self.started = time.monotonic()
        self.bar: progressbar.ProgressBar | None = None
        self.next_log = self.started + LOG_EVERY_SECONDS
        self.last: tuple[int, str] = (0, "")
        if enabled and self._is_terminal():
            widgets: list = ["completed ", progressbar.Counter()]
            if show_queue:
                widgets += [" | in queue ", progressbar.Variable("queue", width=1, format="{formatted_value}")]
            widgets += [
                " | ",
                progressbar.FileTransferSpeed(unit="jobs", prefixes=("", "k", "M", "G")),
                " | ",
                progressbar.Timer(format="elapsed %(elapsed)s"),
            ]
            self.bar = progressbar.ProgressBar(
                max_value=progressbar.UnknownLength,
                widgets=widgets,
                fd=self.stream,
                variables={"queue": "-"},
                poll_interval=0.2,
            )
            self.bar.start()

    def _is_terminal(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def update(self, completed: int, queue: str = "") -> None:
        self.last = (completed, queue)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(completed, queue=queue or "-")
            return
        now = time.monotonic()
        if now >= self.next_log:
            self.next_log = now + LOG_EVERY_SECONDS
            log.info("%s", self.line(completed, queue, now))

    def line(self, completed: int, queue: str = "", now: float | None = None) -> str:
        elapsed = (now or time.monotonic()) - self.started
        parts = [f"completed {completed}"]
        if self.show_queue and queue:
            parts.append(f"in queue {queue}")
        parts.append(_rate_text(completed / elapsed if elapsed > 0 else 0.0))
        parts.append(f"elapsed {_elapsed_text(elapsed)}")
        return " | ".join(parts)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.update(self.last[0], queue=self.last[1] or "-")
            self.bar.finish()
            self.bar = None
