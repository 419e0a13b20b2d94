"""What a person watching a run sees: a progressbar2 line, or plain log lines.

On a terminal, a live progressbar2 line on stderr.  When stderr is not a
terminal (a log file, CI, a pipe), no control characters at all: a plain log
line every few seconds instead.  When the total number of jobs is known, both
show the percentage done and an ETA.
"""

from __future__ import annotations

import logging
import sys
import time

import progressbar

from taskmaster.status import duration_text

log = logging.getLogger("taskmaster.progress")

LOG_EVERY_SECONDS = 10.0


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
        self.mark = progressbar.FormatCustomText("%(mark)s", {"mark": ""})
        if enabled and self._is_terminal():
            self.bar = self._make_bar()
            self.bar.start()

    def _make_bar(self) -> progressbar.ProgressBar:
        widgets: list = [self.mark, "completed ", progressbar.Counter()]
        if self.total:
            widgets += [" (", progressbar.Variable("percent", width=1, format="{formatted_value}"), ")"]
        if self.show_queue:
            widgets += [" | in queue ", progressbar.Variable("queue", width=1, format="{formatted_value}")]
        widgets += [
            " | ",
            progressbar.FileTransferSpeed(unit="jobs", prefixes=("", "k", "M", "G")),
            " | ",
            progressbar.Timer(format="elapsed %(elapsed)s"),
        ]
        if self.total:
            widgets += [" | eta ", progressbar.Variable("eta", width=1, format="{formatted_value}")]
        return progressbar.ProgressBar(
            max_value=progressbar.UnknownLength,
            widgets=widgets,
            fd=self.stream,
            variables={"queue": "-", "percent": "-", "eta": "-"},
            poll_interval=0.2,
        )

    def _is_terminal(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False

    def update(self, completed: int, queue: str = "", resolved: int | None = None, paused: bool = False) -> None:
        """`completed` finished jobs so far; `resolved` also counts failed ones (for percent and ETA)."""
        resolved = completed if resolved is None else resolved
        if paused != self.paused:
            self.paused = paused
            self.mark.update_mapping(mark="PAUSED | " if paused else "")
        if self.first is None:
            self.first = resolved
        self.last = (completed, queue, resolved)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(completed, queue=queue or "-", **self._estimate(resolved))
            return
        now = time.monotonic()
        if now >= self.next_log:
            self.next_log = now + LOG_EVERY_SECONDS
            log.info("%s", self.line(now))

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
            completed, queue, resolved = self.last
            self.bar.update(completed, queue=queue or "-", **self._estimate(resolved))
            self.bar.finish()
            self.bar = None
