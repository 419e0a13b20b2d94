"""A Master as a real process: its socket, its filler greenlet, its signals, its loop.

The top of the master package: it runs a ``core.Master`` it is given
(``run``), and nothing below imports it.  The master's logic is driven
through two calls, ``Master.handle`` (a message arrived at time t) and
``Master.tick`` (the time is t): in-process tests make those calls
themselves, with their own clock and transport.  This module is the rest,
which only a real process needs: bind the socket (and /metrics), run the
filler greenlet that pulls from get_jobs, turn SIGINT and SIGTERM into a
stop, and loop - receive, handle each message, tick - until the run is over;
then close everything, whatever happened.

``Master`` here is the one ``taskmaster.Master`` names: the core's, with
``run()`` (this module's ``run``) for embedding.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import gevent

from taskmaster.master import core
from taskmaster.master.core import TICK_SECONDS
from taskmaster.master.shutdown import Phase

if TYPE_CHECKING:
    from taskmaster.master.outcome import Outcome

log = logging.getLogger("taskmaster.master")

LINGER_POLL_MS = 10  # while lingering (see taskmaster.shutdown), look for stragglers this often


class Master(core.Master):
    """A master to embed: ``Master(get_jobs, target, kwargs, config).run()`` serves until its run ends."""

    def run(self) -> Outcome:
        """Prepare, bind, serve until the run ends; the Outcome says how."""
        return run(self)


def run(m: core.Master) -> Outcome:
    """Prepare, bind, serve until the run ends; the Outcome says how."""
    early = m.prepare()
    if early is not None:
        return early
    metrics = _start_metrics(m)
    try:
        m.endpoint.bind()
    except BaseException:
        if metrics is not None:
            metrics.stop()
        raise
    log.info("listening on %s", m.config.address, extra={"event": "listening", "address": m.config.address})
    if m.config.reset and not m.config.retry_failed and os.path.exists(m.config.failures_path):
        m.failed_jobs.file.rewrite([])  # only now: a master that cannot start changes nothing
    if m.resumed_from.has_anchor:
        log.info(
            "resuming at job %d (%d finished before)",
            m.resumed_from.position,
            m.resumed_from.finished,
            extra={"event": "resumed", "position": m.resumed_from.position, "finished": m.resumed_from.finished},
        )
    m.start(time.monotonic())
    filler = gevent.spawn(m.source.fill)
    handlers = [gevent.signal_handler(s, m.on_signal, s) for s in (signal.SIGINT, signal.SIGTERM)]
    try:
        outcome = serve(m)
    finally:
        filler.kill()
        for handler in handlers:
            handler.cancel()
        m.show_progress()  # the last jobs too: a bar that ends at 99% would be a lie
        m.progress.finish()
        m.failed_jobs.file.close()
        m.endpoint.close()
        if metrics is not None:
            metrics.stop()
    return outcome


def serve(m: core.Master) -> Outcome:
    """The loop of a real master: receive, handle each message, tick; until the run ends."""
    while True:
        for frames in m.endpoint.receive(poll_ms(m)):
            m.handle(frames, time.monotonic())
        outcome = m.tick(time.monotonic())
        if outcome is not None:
            return outcome


def poll_ms(m: core.Master) -> int:
    """How long to wait for messages before the next tick."""
    if m.phase is Phase.CLOSING:
        return LINGER_POLL_MS
    # A parked request waits for the filler rather than for the socket
    # when there is room to fill: look again after a millisecond (not
    # at once: a get_jobs waiting on a database would make it a spin).
    parked = m.dispatcher.parked
    filling = parked and m.ledger.space() > 0 and not m.source.exhausted
    return 1 if filling else 5 if parked else int(TICK_SECONDS * 1000)


def _start_metrics(m: core.Master) -> Any:
    """Serve /metrics if asked to; UsageError if its address cannot be had."""
    if m.config.metrics_address is None:
        return None
    from taskmaster.master.metrics import MetricsServer  # prometheus_client only when asked for

    return MetricsServer(m.view, m.config.metrics_address).start()
