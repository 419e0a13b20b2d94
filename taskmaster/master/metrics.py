"""Prometheus metrics of a running master, read at scrape time.

Nothing is counted on the job path: the master already keeps every number
(the ledger's counts, the slave registry, the checkpoint time), and the
collector reads them only when Prometheus asks.  The HTTP server is gevent's
``pywsgi`` serving ``prometheus_client``'s WSGI app, on the master's own hub:
a scrape runs between two turns of the master loop, so it sees the master's
state whole (no lock, no thread reading dicts the loop is changing), and it
works the same with or without ``--no-monkey-patch`` - a plain thread
(``start_http_server``) would run concurrently with the loop in the first
case.

Counters count this process's run (they start at 0 when a master starts, as
Prometheus expects of a counter: a resumed run is a counter reset, not a jump
back).  ``taskmaster_jobs_resolved`` also counts the jobs of earlier runs of
the same state file, so that with ``taskmaster_jobs_total`` it gives the
fraction done.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from taskmaster import __version__
from taskmaster.errors import UsageError
from taskmaster.master.status import RunView, snapshot
from taskmaster.options import parse_address

if TYPE_CHECKING:
    from gevent.pywsgi import WSGIServer

log = logging.getLogger("taskmaster.master")

SLAVE_STATES = ("working", "lost", "gone")
RUN_STATES = ("running", "paused", "draining", "finished")  # as tm-status says: every one always exported
METRICS_PATH = "/metrics"
MAX_CONNECTIONS = 64  # served at once; more wait in the listen backlog (memory and descriptors stay bounded)
READ_SECONDS = 5.0  # a client silent this long mid-request is dropped
CONNECTION_SECONDS = 10.0  # and none keeps a slot longer, however slowly it trickles (slowloris)
ERROR_LINES_PER_MINUTE = 10  # bad requests logged; the rest are counted in the next line
BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 12\r\n\r\nbad request\n"
)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class MasterCollector(Collector):
    """The master's numbers, read at each scrape from the view `read` returns (the master's ``view``)."""

    def __init__(self, read: Callable[[], RunView]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        run = self.read()
        snap = snapshot(run, time.monotonic())
        yield InfoMetricFamily(
            "taskmaster", "what this master runs", value={"target": run.target, "version": __version__}
        )
        yield CounterMetricFamily(
            "taskmaster_jobs_finished", "jobs finished by a slave in this run of the master",
            value=run.ledger.finished,
        )
        yield CounterMetricFamily(
            "taskmaster_jobs_failed",
            "jobs failed for good (every retry used) in this run of the master",
            value=run.ledger.failed,
        )
        yield CounterMetricFamily(
            "taskmaster_jobs_retried",
            "failed tries of a job that was then handed out again, in this run of the master",
            value=run.failed_jobs.retried,
        )
        yield _gauge(
            "taskmaster_jobs_resolved",
            "jobs finished or failed for good, including earlier runs resumed from the state file",
            snap["finished"] + snap["failed"],
        )
        yield _gauge("taskmaster_jobs_in_flight", "jobs handed to slaves and not resolved yet", snap["in_flight"])
        yield _gauge(
            "taskmaster_jobs_buffered", "jobs pulled from get_jobs, waiting to be handed out", snap["buffered"]
        )
        yield _gauge("taskmaster_buffer_size", "most jobs held at once (--size)", snap["size"])
        if snap["total"] is not None:
            yield _gauge("taskmaster_jobs_total", "how many jobs the run has (--total or count_jobs)", snap["total"])
        slaves = GaugeMetricFamily("taskmaster_slaves", "slaves the master knows, by state", labels=["state"])
        counts = dict.fromkeys(SLAVE_STATES, 0)
        for row in snap["slaves"]:
            counts[row["state"]] = counts.get(row["state"], 0) + 1
        for state, n in counts.items():
            slaves.add_metric([state], n)
        yield slaves
        run_state = GaugeMetricFamily("taskmaster_run_state", "1 for the state the run is in", labels=["state"])
        for state in dict.fromkeys((*RUN_STATES, snap["state"])):
            run_state.add_metric([state], 1 if state == snap["state"] else 0)
        yield run_state
        rate_limit, paused = run.pace.rate_limit or 0, int(run.pace.paused)
        yield _gauge("taskmaster_rate_limit", "most jobs started per second (0: no limit)", rate_limit)
        yield _gauge("taskmaster_paused", "1 while no new jobs are handed out on request (tm-ctl pause)", paused)
        # Before the first checkpoint: nothing done yet, nothing a crash would lose.  A
        # replay of failures (--retry-failed) writes no state file: no age to show.
        checkpointed = run.started if run.checkpointed_at is None else run.checkpointed_at
        if not run.config.retry_failed:
            yield _gauge(
                "taskmaster_checkpoint_age_seconds",
                "seconds since the state file last held the run's progress",
                time.monotonic() - checkpointed,
            )


class ThrottledLog:
    """pywsgi's error log: a few lines a minute at most, so a flood of bad requests cannot flood the log."""

    def __init__(self, per_minute: int = ERROR_LINES_PER_MINUTE) -> None:
        self.per_minute = per_minute
        self.window_start = -60.0
        self.written = 0
        self.suppressed = 0

    def write(self, message: str) -> None:
        now = time.monotonic()
        if now - self.window_start >= 60:
            if self.suppressed:
                log.warning("metrics: %d more bad requests in the last minute, not logged", self.suppressed)
            self.window_start, self.written, self.suppressed = now, 0, 0
        if self.written >= self.per_minute:
            self.suppressed += 1
            return
        self.written += 1
        log.warning("metrics: %s", message.strip()[:300])


def _handler_class() -> type:
    """pywsgi's handler, bounded in time, with bad requests as one short line (never a traceback)."""
    import gevent
    from gevent.pywsgi import WSGIHandler

    class Handler(WSGIHandler):
        def handle(self) -> None:
            self.socket.settimeout(READ_SECONDS)
            with gevent.Timeout(CONNECTION_SECONDS, False):
                super().handle()

        def log_error(self, msg: str, *args: Any) -> None:
            # pywsgi's puts the socket's repr in front: noise in the master's log.
            try:
                message = msg % args if args else msg
            except (TypeError, ValueError):
                message = f"{msg!r} {args!r}"
            self.server.error_log.write(message)

        def _handle_client_error(self, ex: BaseException) -> tuple[str, bytes]:
            # pywsgi prints a traceback for some (a request with too many headers).
            self.log_error("bad request from %s: %s", self.client_address, str(ex)[:200] or type(ex).__name__)
            return ("400", BAD_REQUEST)

    return Handler


class MetricsServer:
    """``/metrics`` over HTTP on the master's gevent hub."""

    def __init__(self, read: Callable[[], RunView], address: str) -> None:
        self.address = address
        try:
            self.host, self.port = parse_address(address)
        except ValueError as exc:  # the CLI checks first; this is for MasterConfig built in Python
            raise UsageError(f"{address!r} is not a metrics address ({exc}); use HOST:PORT") from None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MasterCollector(read))
        self.server: WSGIServer | None = None

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path in (METRICS_PATH, METRICS_PATH + "/"):
            return self._metrics(environ, start_response)
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [f"taskmaster {__version__}: metrics at {METRICS_PATH}\n".encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [f"not found; metrics are at {METRICS_PATH}\n".encode()]

    def start(self) -> MetricsServer:
        """Listen; UsageError (one line) when the address cannot be had."""
        from gevent.pywsgi import WSGIServer

        self._metrics = make_wsgi_app(self.registry)
        # log=None: no access log line per scrape on the master's stderr.  spawn: at
        # most that many connections served at once, so that a flood of them cannot
        # grow the master's memory (more wait in the listen backlog); each is bounded
        # in time (the handler), so idle or trickling clients cannot hold them all.
        server = WSGIServer(
            (self.host, self.port),
            self._app,
            log=None,
            error_log=ThrottledLog(),
            spawn=MAX_CONNECTIONS,
            handler_class=_handler_class(),
        )
        try:
            server.start()
        except OSError as exc:
            reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror or exc})"
            raise UsageError(
                f"metrics address {self.host}:{self.port} {reason}: pass another --metrics-address"
            ) from None
        self.server = server
        host = f"[{self.host}]" if ":" in self.host else self.host
        log.info("serving metrics on http://%s:%d%s", host, self.port, METRICS_PATH)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=1)
            self.server = None
