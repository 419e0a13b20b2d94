"""The slave: a pool of worker greenlets fed with batches from the master.

One request loop talks to the master in the Lazy Pirate manner (one request
in flight at a time, sent again on a new socket when no answer comes, for
``--retries`` tries or as long as ``--wait-for-master`` says: see
``lazy_pirate``).  Each request carries the acknowledgements of
the jobs finished since the last one and asks for enough jobs to keep the
pool busy.  Acknowledgements are only forgotten once the master has answered
the request that carried them, so a master that goes away and comes back
loses nothing the slave finished.  Heartbeats come from a real thread
(``heartbeat``), so the master's lease does not run out while a handler works;
the same thread gives back jobs not started when the master recalls them.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket as stdlib_socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent

from taskmaster.config import SlaveConfig
from taskmaster.progress import Progress
from taskmaster.slave.heartbeat import HeartbeatThread
from taskmaster.slave.lazy_pirate import LazyPirateClient, Patience
from taskmaster.slave.pool import LocalBatch, WorkerPool
from taskmaster.wire import protocol, security
from taskmaster.wire.security import CurveKeys

log = logging.getLogger("taskmaster.slave")

ACK_INTERVAL = 0.005  # longest a finished job waits before it is reported, while reports are cheap for the jobs
IDLE_LOOP_SECONDS = 0.05  # with nothing to report, the request loop still looks this often (a QUIT, a signal)
# Beyond its concurrency a slave holds enough jobs to cover one round trip to
# the master at its measured pace, and no more: jobs held here are jobs no
# other slave can run.  The round trip is measured; these bound it.
MIN_COVER_SECONDS = 0.005
MAX_COVER_SECONDS = 0.05
MAX_PREFETCH = 20000
# A report (acknowledgements, a request for more) costs the slave and the
# master CPU whatever it carries: at the benchmark's database pace a report
# per job cost them several times what spaced reports do (see
# docs/performance.rst, "Report spacing").  So while jobs come at tens a second, a slave reports about once
# per REPORT_SPACING, for that many jobs' worth at its pace, holding that
# many more (at most MAX_JOBS_PER_REPORT: then the jobs are fast enough that
# reports ride on batches anyway).  Slower jobs (under 1/REPORT_SPACING a
# second) still get one report each: they cost more than the report does.
# A request the master parks still acknowledges as jobs finish (while_waiting).
REPORT_SPACING = 0.1
MAX_JOBS_PER_REPORT = 64
STOPPING_MASTER_PAUSE = 0.5  # between two hellos while a stopping master still answers "quit"
FAREWELL_SECONDS = 0.05  # told to quit, how long the BYE waits for the master's "goodbye", at most
DRY_SECONDS = 0.0002  # a pool idle longer than this (and half a job) before a batch came wants more at once


class Slave:
    def __init__(
        self,
        handle_job: Callable[[Any], Any],
        config: SlaveConfig,
        keys: CurveKeys | None = None,
        client: LazyPirateClient | None = None,
    ) -> None:
        self.handle_job = handle_job
        self.config = config
        # A slave beside its master waits for it as long as it takes: its
        # tm-run stops it should that master die.
        wait = 0.0 if config.beside_master else config.wait_for_master
        self.patience = Patience(config.address, config.retries, config.timeout_ms, wait, config.beside_master)
        secure = keys.secure_client if keys is not None else None
        self.secure = secure
        self.host = re.sub(r"[^A-Za-z0-9_.:@-]", "_", stdlib_socket.gethostname())[:200] or "unknown"
        self.id = f"{self.host[:64]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.run_id = ""
        self.token = ""
        self.joined = False  # welcomed by a master at least once
        self.seq = 0  # numbers our requests; a resent request keeps its number
        # Our connections' routing ids, chosen here (never starting with a zero
        # byte: those are the ROUTER's own): the master honours our token only
        # from the connections the HELLO names, also after a reconnect.
        self.request_id = f"req-{uuid.uuid4().hex}"
        self.beat_id = f"beat-{uuid.uuid4().hex}"
        # The request socket: the real one, or (in-process tests) any object
        # with the same connect/close/ask/send/unprompted/unreachable.
        self.client = client or LazyPirateClient(
            config.address, secure, self.patience, self.request_id, security.mismatch_hint(keys)
        )
        self.pool = WorkerPool(handle_job, config.concurrency, config.job_timeout, config.job_repr)
        self.rate = 0.0  # jobs finished per second, recently
        self.boost = 0  # grows while batches arrive too late to keep the pool busy
        self.quit_reason: str | None = None
        self.stopping: int | None = None
        self.stop_deadline = 0.0
        watchdog = self.pool.interrupt_overdue_job if config.job_timeout else None
        self.heartbeat = HeartbeatThread(
            config.address, self.id, secure, watchdog, self.pool.give_back, self.beat_id.encode()
        )
        self.error = ""

    # ------------------------------------------------ while a request waits

    def working(self) -> bool:
        return bool(self.pool.running or self.pool.todo)

    def while_waiting(self, kind: bytes) -> bool:
        """A request waits: keep the pace measured and the acknowledgements going; True to give up."""
        self._tick()
        if kind == protocol.REQUEST:
            self._send_acks()
        return self._give_up_asking(kind)

    def last_try(self) -> bool:
        return self.stopping is not None

    def _send_acks(self) -> None:
        """Acknowledge finished and failed jobs now, without waiting for the request's answer."""
        if (self.pool.touched or self.pool.failures) and self.run_id:
            acks, failures = self.pool.take_acks(self.run_id)
            # If it cannot go now, the next report carries them.
            self.client.send(protocol.ack(self.id, self.run_id, self.token, acks, failures))

    def _give_up_asking(self, kind: bytes) -> bool:
        """Stopping: a hello is not worth waiting for; a report is, within the grace."""
        if self.stopping is None:
            return False
        return kind == protocol.HELLO or time.monotonic() > self.stop_deadline

    # ---------------------------------------------------------------- run

    def run(self) -> int:
        """Work until the master says quit; the exit code."""
        self.progress = Progress(self.config.progress, show_queue=False)
        self.started = time.monotonic()
        self._rate_mark = (self.started, 0)
        handlers = [gevent.signal_handler(s, self._on_signal, s) for s in (signal.SIGINT, signal.SIGTERM)]
        try:
            self.client.connect()
            if not self._hello():
                if self.stopping is not None:
                    return 128 + self.stopping
                return 0 if self.quit_reason is not None else 1
            self.heartbeat.start()
            self.pool.start()
            return self._talk()
        finally:
            self.pool.kill()
            self.heartbeat.stop()
            self.heartbeat.report_problems()
            for handler in handlers:
                handler.cancel()
            self.client.close()
            self.progress.finish()
            pool = self.pool
            log.debug(
                "pace: round trip %.1f ms, %.0f jobs/s, holding up to %d jobs, %d requests",
                self.client.round_trip * 1000,
                self.rate,
                self._holding()[0],
                self.seq,
            )
            if self.joined or self.quit_reason is not None:  # one stopped before it heard a master: nothing to sum up
                finished, cpu = pool.resolved - pool.failed, time.process_time()  # cpu: its jobs, loop, liveness thread
                # Failed *attempts*: the master retries a job, maybe here, and
                # alone knows which failed for good (its summary counts jobs).
                log.info(
                    "%d jobs finished, %d attempts failed, busy %.2fs of %.2fs, cpu %.2fs",
                    finished,
                    pool.failed,
                    pool.busy_seconds,
                    time.monotonic() - self.started,
                    cpu,
                    extra={"event": "slave_done", "finished": finished, "failed": pool.failed,
                           "busy_seconds": round(pool.busy_seconds, 3), "cpu_seconds": round(cpu, 3)},
                )

    def _on_signal(self, signum: int) -> None:
        self.pool.news.set()  # the request loop says goodbye when the running jobs end, not 50 ms later
        if self.stopping is None:
            self.stopping = signum
            self.pool.accepting = False
            self.stop_deadline = time.monotonic() + self.config.grace
            if self.pool.running:
                log.warning(
                    "stopping: finishing the %d jobs running now (up to %gs; again to stop now)",
                    self.pool.running,
                    self.config.grace,
                )
            else:
                log.debug("stopping")
        else:
            self.stop_deadline = time.monotonic()

    def _hello(self) -> bool:
        hello = protocol.hello(
            self.id,
            self.host,
            os.getpid(),
            self.config.concurrency,
            self.config.timeout_ms,
            self.beat_id,
            self.request_id,
        )
        while True:
            reply = self.client.ask(hello, self)
            if reply is None:
                if self.stopping is not None:
                    return False  # asked to stop before the master answered: nothing to report
                self.error = self.client.unreachable(
                    f"no master answered at {self.config.address} {self.patience.describe()}: "
                    "start tm-master there, or check --address"
                )
                return False
            kind, header, _ = protocol.decode_from_master(reply)
            if not (kind == protocol.QUIT and self._waits_for_the_next_master(header)):
                break
            gevent.sleep(STOPPING_MASTER_PAUSE)  # a master on its way out: ask its successor
            self.client.connect()
        if kind == protocol.QUIT:
            self.quit_reason = header.get("reason", "")
            return False
        if kind != protocol.WELCOME:
            self.error = f"the master answered {kind[:20]!r} to hello: {header}"
            return False
        self.run_id = header["run"]
        self.token = header["token"]
        self.joined = True
        self.heartbeat.join_run(self.run_id, self.token, float(header["heartbeat_interval"]))
        return True

    def _talk(self) -> int:
        """The request loop: report, ask for jobs, take the answer."""
        last_report = time.monotonic()
        while True:
            now = time.monotonic()
            request = self._next_request(now, last_report)
            if request is None:
                if self.pool.error:
                    self.error = self.pool.error
                    return 1
                self._tick()
                unprompted = self.client.unprompted()  # the master says quit
                if unprompted is not None:
                    self._take_reply(unprompted)
                    if self.quit_reason is not None:
                        self._farewell()
                        return self._quit_code()
                self._wait_for_news(now, last_report)
                continue
            last_report = now
            reply = self.client.ask(request, self)
            if reply is None:
                if self.stopping is not None:
                    return 128 + self.stopping
                self.error = self.client.unreachable(
                    f"lost the master at {self.config.address}: no answer {self.patience.describe()}; "
                    "start it again and restart this slave "
                    f"({self.pool.resolved} jobs done here, unacknowledged ones will run again)"
                )
                return 1
            self._take_reply(reply)
            if self.pool.error:
                self.error = self.pool.error
                return 1
            if request[0] == protocol.BYE:  # the master's answer is "goodbye": we said ours
                return self._quit_code() if self.quit_reason is not None else 128 + (self.stopping or signal.SIGTERM)
            if self.quit_reason is not None:
                self._farewell()
                return self._quit_code()

    def _wait_for_news(self, now: float, last_report: float) -> None:
        """Nothing to say yet: let the workers run until there is.

        With finished jobs to report, until they are due (``_ack_delay``), or
        less if the pool runs low (time to ask for more); otherwise until
        there is news (a job finished, a failure, a batch used up, a signal)
        or IDLE_LOOP_SECONDS at most, to look for a QUIT meanwhile.
        """
        if self.pool.has_unreported():
            self.pool.running_low.clear()
            self.pool.running_low.wait(max(0.0, last_report + self._ack_delay() - now))
        else:
            self.pool.news.clear()
            self.pool.news.wait(IDLE_LOOP_SECONDS)

    def _farewell(self) -> None:
        """Told to quit: say BYE, with the last acknowledgements, and wait a moment for the answer.

        The master stops lingering once every slave that joined said BYE,
        rather than after a quiet moment (taskmaster.shutdown); and waiting
        for its "goodbye" sees the BYE out before this process ends.
        """
        if not self.run_id:
            return
        self.client.send(self._build_request(0, leaving=True))
        self.client.wait_for_answer(FAREWELL_SECONDS)

    def _jobs_per_report(self) -> int:
        """Jobs we finish in REPORT_SPACING at our pace (0 if they take longer), at most MAX_JOBS_PER_REPORT."""
        return min(MAX_JOBS_PER_REPORT, int(self.rate * REPORT_SPACING))

    def _ack_delay(self) -> float:
        """How long finished jobs may wait for a report: REPORT_SPACING while reports are spaced, else ACK_INTERVAL."""
        return REPORT_SPACING if self._jobs_per_report() > 1 else ACK_INTERVAL

    def _holding(self) -> tuple[int, int]:
        """Jobs to hold, running and waiting, and how many must be missing before we ask for more.

        The concurrency plus one round trip's worth at our pace, and while
        reports are spaced, one report's worth more, asked for together.
        """
        cover = min(MAX_COVER_SECONDS, max(MIN_COVER_SECONDS, self.client.round_trip))
        in_flight = math.ceil(self.rate * cover)
        per_report = self._jobs_per_report()
        prefetch = max(1, min(MAX_PREFETCH, max(in_flight, per_report + math.ceil(in_flight / 2))), self.boost)
        # Ask again once half the prefetch is used (or a report's worth), so
        # the pool never holds fewer jobs than it has greenlets while the
        # master has more.
        refill = max(1, prefetch // 2, per_report)
        return self.config.concurrency + prefetch, refill

    def _next_request(self, now: float, last_report: float) -> list[bytes] | None:
        """The next message for the master, or None when there is nothing to say yet."""
        unreported = self.pool.has_unreported()
        if self.stopping is not None:
            if self.pool.running == 0 or now >= self.stop_deadline:
                return self._build_request(0, leaving=True)
            return self._build_request(0) if unreported and now - last_report >= ACK_INTERVAL else None
        target, refill = self._holding()
        queued = self.pool.queued()
        want = target - queued - self.pool.running
        idle = queued == 0 and self.pool.running == 0
        self.pool.low_water = target - refill  # wake this loop once the pool holds no more than that
        if want >= refill or idle or unreported and now - last_report >= self._ack_delay():
            return self._build_request(max(0, want))
        return None

    def _build_request(self, want: int, leaving: bool = False) -> list[bytes]:
        acks, failures, cuts = self.pool.take_report(self.run_id)
        self.seq += 1
        queue = self.pool.waiting()
        return protocol.report(self.id, self.run_id, self.token, self.seq, want, acks, failures, leaving, queue, cuts)

    def _take_reply(self, frames: list[bytes]) -> None:
        kind, header, jobs = protocol.decode_from_master(frames)
        if kind == protocol.JOBS:
            if jobs:
                dry_for = self.pool.add(LocalBatch(header["batch"], self.run_id, header["positions"], jobs))
                if dry_for > max(DRY_SECONDS, self.pool.job_seconds / 2) and self.pool.resolved:
                    # The pool sat idle waiting for this batch: ask for more next time.
                    self.boost = min(MAX_PREFETCH, max(2 * self.boost, 2 * len(jobs)))
        elif kind == protocol.QUIT:
            if self._waits_for_the_next_master(header):
                self._forget_run("the master is stopping; waiting for the next one (--wait-for-master)")
            else:
                self.quit_reason = header.get("reason", "")
        elif kind == protocol.RESET:
            self._forget_run("the master restarted; joining its new run")
        elif kind == protocol.REJECT:
            log.error("the master rejected a message: %s", header.get("error"))

    def _waits_for_the_next_master(self, quit_header: dict) -> bool:
        """Whether a QUIT means "wait": a master that stops before the end of the run (a pod deleted,
        a job cancelled) comes back, and a slave told to wait for its master (--wait-for-master) waits."""
        stopping = quit_header.get("reason") == protocol.QUIT_STOPPING
        waits = self.config.wait_for_master is not None and not self.config.beside_master
        return stopping and waits and self.stopping is None

    def _forget_run(self, why: str) -> None:
        """A new master run: drop what belonged to the old one, and say hello."""
        log.warning(why)
        # A fresh socket: answers still on their way to the old one (to
        # messages sent before the hello) cannot be taken for the hello's.
        self.client.connect()
        self.pool.forget()
        self.run_id = ""
        if not self._hello():
            self.quit_reason = self.quit_reason or ""  # stop; _hello set self.error unless told to quit

    def _quit_code(self) -> int:
        """The exit code once the loop stops: 1 after an error (a failed rejoin), 128+N after a signal, else 0."""
        if self.error:
            return 1
        return 128 + self.stopping if self.stopping else 0

    def _tick(self) -> None:
        self.heartbeat.report_problems()  # the liveness thread cannot log itself
        now = time.monotonic()
        since, count = self._rate_mark
        if now - since >= 0.2:
            resolved = self.pool.resolved
            instant = (resolved - count) / (now - since)
            self.rate = instant if self.rate == 0 else 0.7 * self.rate + 0.3 * instant
            self._rate_mark = (now, resolved)
            self.progress.update(resolved)  # a slave's bar counts every job it ran, failed ones too
