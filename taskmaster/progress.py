"""What a person watching a run sees: a progressbar2 bar or line, or plain log lines.

On a terminal, a live progressbar2 display on stderr: when the total number of
jobs is known, a drawn bar with the percentage, the rate and an ETA; without
it, a counter line.  When stderr is not a terminal (a log file, CI, a pipe),
when ``TERM=dumb`` or with JSON logs, no control characters at all: a plain
log line every few seconds instead, with percentage and ETA when the total is
known.  ``NO_COLOR`` (set and not empty) turns colours off.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys
import time
from typing import TYPE_CHECKING

from taskmaster.text import duration_text

if TYPE_CHECKING:
    import progressbar  # imported where a bar is drawn: most runs (pipes, logs) never draw one

log = logging.getLogger("taskmaster.progress")

LOG_EVERY_SECONDS = 10.0
SPEED_WINDOW = datetime.timedelta(seconds=10)  # rate and ETA over recent samples: right after a resume too

_may_draw = True  # False: plain lines only, even on a terminal (JSON logs)


def plain_lines_only() -> None:
    """Never draw on the terminal in this process: every progress report is a log line."""
    global _may_draw
    _may_draw = False


def can_draw(stream) -> bool:
    """Whether `stream` is a terminal we may redraw a line on (not TERM=dumb)."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


def colours_wanted() -> bool | None:
    """False when NO_COLOR asks for no colour (https://no-color.org); None lets progressbar2 decide."""
    return False if os.environ.get("NO_COLOR") else None


def _rate_text(rate: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if rate >= scale:
            return f"{rate / scale:.1f}{unit} jobs/s"
    return f"{rate:.1f} jobs/s"


class Progress:
    """Progress of one process: completed jobs, rate, elapsed; queue and ETA if known."""

    def __init__(self, enabled: bool, show_queue: bool, total: int | None = None, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.show_queue = show_queue
        self.total = total
        self.started = time.monotonic()
        self.bar: progressbar.ProgressBar | None = None
        self.next_log = self.started + LOG_EVERY_SECONDS
        self.first: int | None = None  # jobs already done when this run started (a resume)
        self.last: tuple[int, str, int] = (0, "", 0)
        self.paused = False  # the master is paused (tm-ctl pause): said first, on the bar and the log line
        # The bar's "PAUSED | " mark; made only for a drawn bar, as progressbar
        # imports its widgets on first use (see docs/performance.rst, "The
        # progress bar's widgets").
        self.mark: progressbar.FormatCustomText | None = None
        if enabled and _may_draw and can_draw(self.stream):
            import progressbar

            self.mark = progressbar.FormatCustomText("%(mark)s", {"mark": ""})
            self.bar = self._drawn_bar() if total else self._counter_line()
            self.bar.start()

    def _drawn_bar(self) -> progressbar.ProgressBar:
        """`` 42% |##########             | 1680/4000 | 160.0 jobs/s | ETA:   0:00:14``.

        The queue is left out: the bar takes the width the words leave it,
        and on an 80-column terminal there would be none left (tm-status
        shows the queue).
        """
        import progressbar

        widgets: list = [
            self.mark,
            progressbar.Percentage(),
            " ",
            progressbar.Bar(left="|", right="|"),
            " ",
            progressbar.Variable("done", width=1, format="{formatted_value}"),
            " | ",
            progressbar.AdaptiveTransferSpeed(unit="jobs", prefixes=("", "k", "M", "G"), samples=SPEED_WINDOW),
            " | ",
            progressbar.AdaptiveETA(samples=SPEED_WINDOW),
        ]
        return progressbar.ProgressBar(
            max_value=self.total,
            max_error=False,  # a total that was too small (count_jobs guessed low) shows 100%, no error
            widgets=widgets,
            fd=self.stream,
            variables={"done": "-"},
            poll_interval=0.2,
            enable_colors=colours_wanted(),
            redirect_stderr=self._own_stderr(),
        )

    def _own_stderr(self) -> bool:
        """Whether the bar is drawn on this process's stderr: then progressbar2 wraps sys.stderr.

        A line written there while the bar is drawn (a log line: see
        cli.common.setup_logging) is held until the bar clears its line, then
        written, and the bar is drawn again below it; not glued onto the bar.
        """
        return self.stream is sys.stderr

    def _counter_line(self) -> progressbar.ProgressBar:
        import progressbar

        widgets: list = [self.mark, "completed ", progressbar.Counter()]
        if self.show_queue:
            widgets += [" | in queue ", progressbar.Variable("queue", width=1, format="{formatted_value}")]
        widgets += [
            " | ",
            progressbar.FileTransferSpeed(unit="jobs", prefixes=("", "k", "M", "G")),
            " | ",
            progressbar.Timer(format="elapsed %(elapsed)s"),
        ]
        return progressbar.ProgressBar(
            max_value=progressbar.UnknownLength,
            widgets=widgets,
            fd=self.stream,
            variables={"queue": "-"},
            poll_interval=0.2,
            enable_colors=colours_wanted(),
            redirect_stderr=self._own_stderr(),
        )

    def update(self, completed: int, queue: str = "", resolved: int | None = None, paused: bool = False) -> None:
        """`completed` finished jobs so far; `resolved` also counts failed ones (for percent and ETA)."""
        resolved = completed if resolved is None else resolved
        if paused != self.paused:
            self.paused = paused
            if self.mark is not None:
                self.mark.update_mapping(mark="PAUSED | " if paused else "")
        if self.first is None:
            self.first = resolved
        self.last = (completed, queue, resolved)
        if not self.enabled:
            return
        if self.bar is not None:
            self._draw(completed, queue, resolved)
            return
        now = time.monotonic()
        if now >= self.next_log:
            self.next_log = now + LOG_EVERY_SECONDS
            completed, _, resolved = self.last
            log.info("%s", self.line(now), extra={"completed": completed, "resolved": resolved, "total": self.total})

    def _draw(self, completed: int, queue: str, resolved: int, force: bool = False) -> None:
        assert self.bar is not None
        if not self.total:
            self.bar.update(completed, queue=queue or "-", force=force)
            return
        failed = resolved - completed
        done = f"{completed}/{self.total}" + (f", {failed} failed" if failed else "")
        self.bar.update(resolved, done=done, force=force)

    def _estimate(self, resolved: int, now: float | None = None) -> dict[str, str]:
        if not self.total:
            return {}
        elapsed = (now or time.monotonic()) - self.started
        rate = (resolved - (self.first or 0)) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - resolved) / rate if rate > 0 else None
        return {"percent": f"{100.0 * resolved / self.total:.1f}%", "eta": duration_text(eta)}

    def line(self, now: float | None = None) -> str:
        completed, queue, resolved = self.last
        now = now or time.monotonic()
        elapsed = now - self.started
        estimate = self._estimate(resolved, now)
        parts = ["PAUSED"] if self.paused else []
        parts.append(f"completed {completed}" + (f" ({estimate['percent']})" if estimate else ""))
        if self.show_queue and queue:
            parts.append(f"in queue {queue}")
        rate = (completed - min(self.first or 0, completed)) / elapsed if elapsed > 0 else 0.0
        parts.append(_rate_text(rate))
        parts.append(f"elapsed {duration_text(elapsed)}")
        if estimate:
            parts.append(f"eta {estimate['eta']}")
        return " | ".join(parts)

    def finish(self) -> None:
        if self.bar is not None:
            self._draw(*self.last, force=True)  # the last jobs and mark, not what was drawn 0.2 s ago
            self.bar.finish(dirty=True)  # as it stands: a run stopped at 40% is not drawn as 100%
            self.bar = None
