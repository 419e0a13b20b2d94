"""The master: one loop that hands out batches of jobs and records their fate.

A filler greenlet pulls jobs from the user's iterator into the ledger while
there is room (at most ``--size`` jobs held, buffered or leased).  The main
loop answers slaves: each REQUEST acknowledges finished jobs, reports failed
ones and asks for more; the reply is one batch, pickled once.  A request that
finds nothing to hand out is parked until jobs arrive.  Every second the loop
writes the checkpoint; every tick it takes back the jobs of slaves whose
lease ran out.  Nothing a slave sends is ever unpickled: it is JSON,
validated by ``protocol`` and checked against what that slave was handed.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event

from taskmaster import checkpoint, failures, fileio, protocol, status
from taskmaster.control import Controls
from taskmaster.endpoint import MasterEndpoint
from taskmaster.halting import FailureLimit
from taskmaster.ledger import Ledger
from taskmaster.progress import Progress
from taskmaster.ranges import within
from taskmaster.registry import SlaveRecord, SlaveRegistry
from taskmaster.security import CurveKeys
from taskmaster.source import JobSource
from taskmaster.throttle import Throttle

log = logging.getLogger("taskmaster.master")

MAX_BATCH = 20000  # jobs in one reply, at most
# While jobs pickle to this many bytes or fewer on average, the window holds up
# to WINDOW_STRETCH x --size of them: a round trip to a slave takes the same
# time whatever the job, and --size tiny jobs do not cover it at millions of
# jobs a second.  The memory is that of --size jobs of about 1 KB.
SMALL_JOB_BYTES = 64
WINDOW_STRETCH = 16
TICK_SECONDS = 0.1  # housekeeping period: progress, leases, rate
QUIT_LINGER_SECONDS = 0.5  # after telling slaves to quit, how long to answer stragglers, at most
QUIET_SECONDS = 0.05  # ... and at least: once every slave was told and this long passed without a word, done
# A request that finds no job to hand out waits for one this long at most.  A
# slave still holding jobs gets its answer soon, because while its request
# waits it cannot acknowledge the jobs it finishes - and those may be what
# holds the window (--size) shut for everyone.
PARK_HOLDING_SECONDS = 0.02
PARK_IDLE_SECONDS = 1.0


@dataclass
class MasterConfig:
    address: str = "tcp://127.0.0.1:3050"
    size: int = 10000
    state_path: str = "taskmaster.state"
    failures_path: str = "taskmaster.failures.jsonl"
    reset: bool = False
    retry_failed: bool = False
    lease_timeout: float = 30.0
    max_retries: int = 3
    grace: float = 10.0
    checkpoint_interval: float = 1.0
    progress: bool = True
    total: int | None = None
    linger: float = 3.0
    metrics_address: str | None = None  # serve /metrics here (see taskmaster.metrics)
    rate: float | None = None  # --rate: jobs started per second, at most
    max_failures: FailureLimit | None = None  # --max-failures: halt past this


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


class Master:
    def __init__(
        self,
        get_jobs: Callable[..., Any],
        target: str,
        kwargs: dict[str, str],
        config: MasterConfig,
        keys: CurveKeys | None = None,
        count_jobs: Callable[..., Any] | None = None,
    ) -> None:
        self.get_jobs = get_jobs
        self.count_jobs = count_jobs
        self.target = target
        self.kwargs = kwargs
        self.config = config
        self.endpoint = MasterEndpoint(config.address, keys)
        self.run_id = uuid.uuid4().hex
        self.waiting: dict[str, tuple[float, int]] = {}  # parked requests: slave id -> (when to answer anyway, want)
        self.bad_messages = 0
        self.foreign_tokens = 0  # messages with a slave's token from a connection it was not issued on
        self.job_bytes = 0.0  # pickled size of a job, on average over recent batches
        self.stopping: int | None = None  # the signal that asked us to stop
        self.stop_deadline = 0.0
        self.disk_error: str | None = None  # a failed job could not be recorded: stop now
        self.closing = False  # the run is over: every slave is told to quit
        self.ended: str | None = None  # how the run ended (complete, interrupted...): tm-status --watch reports it
        self.state = checkpoint.State(target, kwargs)
        self.failed_jobs = failures.FailedJobs(config.failures_path, config.max_retries)
        self.rate = status.RateMeter()
        self.total: int | None = config.total
        self.started = time.monotonic()
        self.checkpointed_at: float | None = None  # when the state file last held our progress (monotonic)
        # Live settings (tm-ctl changes them): handing out stops while paused,
        # and the throttle paces it while there is a rate limit.
        self.paused: bool = False
        self.rate_limit: float | None = config.rate
        self.throttle: Throttle | None = Throttle(config.rate, self.started) if config.rate else None
        self.halted: str | None = None  # why --max-failures halted the run
        self.control = Controls(self)
        self.ledger: Ledger
        self.registry: SlaveRegistry
        self.source: JobSource
        self.saver: checkpoint.Saver

    # ------------------------------------------------------------- set-up

    def prepare(self) -> Outcome | None:
        """Load the state and open the iterator; an Outcome if there is nothing to run.

        Raises UsageError (before anything is written) for a bad state file.
        """
        cfg = self.config
        if not cfg.retry_failed:
            fileio.check_writable(cfg.state_path, "state file", "--state-file")
        fileio.check_writable(cfg.failures_path, "failures file", "--failures-file")
        if cfg.retry_failed:
            jobs = self.failed_jobs.start_replay()
            if not jobs:
                return Outcome(0, f"no failed jobs to retry in {cfg.failures_path}")
            self.ledger = Ledger(cfg.size, stretch=WINDOW_STRETCH)
            self.source = JobSource(self.ledger)
            self.source.serve(jobs)
            self.total = len(jobs)
        else:
            state = None if cfg.reset else checkpoint.load(cfg.state_path, self.target, self.kwargs)
            if state is not None and state.complete:
                still_failed = len(self.failed_jobs.file.read()) if os.path.exists(cfg.failures_path) else 0
                if still_failed:
                    # Not a success to report as one: jobs failed for good and wait in the file.
                    return Outcome(
                        1,
                        f"this run already finished, but {still_failed} jobs failed for good; they are in "
                        f"{cfg.failures_path}: run them again with --retry-failed (or start over with --reset)",
                    )
                return Outcome(
                    0,
                    f"this run already finished ({state.finished} jobs finished, {state.failed} failed, "
                    f"state file {cfg.state_path}); use --reset to run it again",
                )
            resume = state is not None and state.has_anchor
            if resume:
                self.state = state
            start, resolved = (self.state.position, self.state.resolved) if resume else (0, [])
            self.ledger = Ledger(cfg.size, start=start, resolved_ahead=resolved, stretch=WINDOW_STRETCH)
            self.source = JobSource(self.ledger)
            if resume:
                self.source.open(self.get_jobs, self.kwargs, last=self.state.anchor)
            else:
                self.source.open(self.get_jobs, self.kwargs)
            self.total = self._count() if self.total is None else self.total
            self.state.total = self.total
        self.registry = SlaveRegistry(self.ledger, cfg.lease_timeout)
        self.saver = checkpoint.Saver(cfg.state_path, self.state)
        return None

    def _count(self) -> int | None:
        """The user's count_jobs(**kwargs), if any: makes percent done and ETA possible."""
        if self.count_jobs is None:
            return self.state.total
        try:
            return int(self.count_jobs(**self.kwargs))
        except Exception as exc:
            log.warning("count_jobs failed (%s: %s): no ETA for this run", type(exc).__name__, exc)
            return None

    # -------------------------------------------------------------- run

    def run(self) -> Outcome:
        """Prepare, bind, serve until the run ends; the Outcome says how."""
        early = self.prepare()
        if early is not None:
            return early
        metrics = self._start_metrics()
        try:
            self.endpoint.bind()
        except BaseException:
            if metrics is not None:
                metrics.stop()
            raise
        log.info("listening on %s", self.config.address, extra={"event": "listening", "address": self.config.address})
        if self.config.reset and not self.config.retry_failed and os.path.exists(self.config.failures_path):
            self.failed_jobs.file.rewrite([])  # only now: a master that cannot start changes nothing
        if self.state.has_anchor:
            log.info(
                "resuming at job %d (%d finished before)",
                self.state.position,
                self.state.finished,
                extra={"event": "resumed", "position": self.state.position, "finished": self.state.finished},
            )
        self.progress = Progress(self.config.progress, show_queue=True, total=self.total)
        self.started = time.monotonic()
        filler = gevent.spawn(self.source.fill)
        handlers = [gevent.signal_handler(s, self._on_signal, s) for s in (signal.SIGINT, signal.SIGTERM)]
        try:
            outcome = self._serve()
        finally:
            filler.kill()
            for handler in handlers:
                handler.cancel()
            self._show_progress()  # the last jobs too: a bar that ends at 99% would be a lie
            self.progress.finish()
            self.failed_jobs.file.close()
            self.endpoint.close()
            if metrics is not None:
                metrics.stop()
        return outcome

    def _start_metrics(self) -> Any:
        """Serve /metrics if asked to; UsageError if its address cannot be had."""
        if self.config.metrics_address is None:
            return None
        from taskmaster.metrics import MetricsServer  # prometheus_client only when asked for

        return MetricsServer(self, self.config.metrics_address).start()

    def _on_signal(self, signum: int) -> None:
        now = time.monotonic()
        if self.stopping is None:
            self.stopping = signum
            self.stop_deadline = now + self.config.grace
            log.warning("stopping: waiting up to %gs for the jobs in flight (again to stop now)", self.config.grace)
        else:
            self.stop_deadline = now

    def _stop_for_disk(self, error: str) -> None:
        """Stop at once: a job that cannot be recorded must not be counted as resolved."""
        if self.disk_error is None:
            log.error("%s; stopping", error)
            self.disk_error = error
        self.stopping = self.stopping or signal.SIGTERM
        self.stop_deadline = time.monotonic()

    def _serve(self) -> Outcome:
        next_tick = 0.0
        next_checkpoint = time.monotonic() + self.config.checkpoint_interval
        while True:
            # A parked request waits for the filler rather than for the socket
            # when there is room to fill: look again after a millisecond (not
            # at once: a get_jobs waiting on a database would make it a spin).
            filling = self.waiting and self.ledger.space() > 0 and not self.source.exhausted
            timeout_ms = 1 if filling else 5 if self.waiting else int(TICK_SECONDS * 1000)
            for frames in self.endpoint.receive(timeout_ms):
                self._handle(frames)
            now = time.monotonic()
            if self.ledger.space() > 0 and not self.source.exhausted:
                self.source.wake()
                if self.waiting:
                    gevent.sleep(0)  # let the filler use the room the acknowledgements made
            if self.waiting:
                self._serve_waiting(now)
            if self.control.pending:
                self.control.answer_settled(now)
            if now >= next_tick:
                next_tick = now + TICK_SECONDS
                for slave in self.registry.expire(now):
                    self.waiting.pop(slave.id, None)
                self.rate.sample(now, self._resolved())
                self._show_progress()
                self.control.check_failures()
            if now >= next_checkpoint:
                next_checkpoint = now + self.config.checkpoint_interval
                self._checkpoint()
            ended = self._ended(now)
            if ended:
                return self._finish(ended)

    def _show_progress(self) -> None:
        queue = f"{self.ledger.undispatched()}/{self.config.size}"
        self.progress.update(self._total_finished(), queue, self._resolved(), paused=self.paused)

    def _ended(self, now: float) -> str:
        if self.stopping is not None:
            if self.registry.in_flight() == 0 or now >= self.stop_deadline:
                return "halted" if self.halted else "interrupted"
            return ""
        if self.source.exhausted and self.ledger.drained():
            if self.source.error:
                return "source-error"
            return "unpicklable" if self.source.poison else "complete"
        return ""

    # --------------------------------------------------------- messages

    def _bad(self, identity: bytes | None, reason: str) -> None:
        self.bad_messages += 1
        if self.bad_messages in (1, 10, 100) or self.bad_messages % 1000 == 0:
            log.warning("ignored a malformed message (%d so far): %s", self.bad_messages, reason)
        if identity is not None:
            self.endpoint.send(identity, protocol.reject(reason))

    def _handle(self, frames: list[bytes]) -> None:
        if len(frames) < 2:
            self._bad(None, "no body")
            return
        identity = frames[0]
        try:
            msg = protocol.decode_from_slave(frames[1:])
        except protocol.ProtocolError as exc:
            self._bad(identity, str(exc))
            return
        now = time.monotonic()
        if isinstance(msg, protocol.Ack):
            slave = self.registry.get(msg.slave)
            if slave is not None and msg.run == self.run_id and msg.token == slave.token and not slave.gone:
                if self._foreign(slave, identity, self._request_connection(slave, identity)):
                    return
                self.registry.seen(slave, now)
                self._apply_acks(slave, msg.acks)
        elif isinstance(msg, (protocol.Heartbeat, protocol.GiveBack)):
            slave = self.registry.get(msg.slave)
            if slave is not None and msg.run == self.run_id and msg.token == slave.token:
                if self._foreign(slave, identity, slave.beat_identity):
                    return
                self.registry.seen(slave, now)
                if isinstance(msg, protocol.GiveBack):
                    self._give_back(slave, msg.cuts)
                    slave.queue = msg.queue
                    if self.paused or self.halted:
                        self.control.on_news(slave, now)
        elif isinstance(msg, protocol.Hello):
            self._hello(identity, msg, now)
        elif isinstance(msg, protocol.StatusRequest):
            self.endpoint.send(identity, protocol.status_reply(self.snapshot()))
        elif isinstance(msg, protocol.ControlRequest):
            self.control.handle(identity, msg, now)
        else:
            self._report(identity, msg, now)

    def _hello(self, identity: bytes, msg: protocol.Hello, now: float) -> None:
        if self.closing:
            self.endpoint.send(identity, protocol.quit_(self._quit_reason()))
            return
        slave = self.registry.join(msg.slave, msg.host, msg.pid, msg.concurrency, msg.timeout_ms, identity, now)
        if slave is None:
            self._bad(identity, "too many slaves")
            return
        slave.beat_identity = msg.beat.encode() if msg.beat else None  # its liveness thread: where recalls go
        slave.conn = msg.conn.encode()
        lease = self.config.lease_timeout
        self.endpoint.send(identity, protocol.welcome(self.run_id, slave.token, lease, lease / 3))

    def _report(self, identity: bytes, msg: protocol.Report, now: float) -> None:
        slave = self.registry.get(msg.slave)
        if msg.run != self.run_id or slave is None:
            # Acknowledgements meant for another run of a master: their
            # positions may not be this run's jobs, so they are not counted.
            self.endpoint.send(identity, protocol.reset("this master does not know that run; say hello again"))
            return
        if msg.token != slave.token:
            # Not the process that said hello under this id (or an impostor):
            # it gets nothing, and changes nothing.
            self.endpoint.send(identity, protocol.reset("unknown slave token; say hello again"))
            return
        if self._foreign(slave, identity, self._request_connection(slave, identity)):
            # The token, replayed from another connection: nothing changes.
            self.endpoint.send(identity, protocol.reset("that token belongs to another connection; say hello again"))
            return
        slave.identity = identity  # the slave's current connection (a Lazy Pirate retry opens a new one)
        self.registry.seen(slave, now)
        if msg.seq == slave.last_seq and slave.last_batch in slave.batches:
            # The same request again: our answer never reached the slave, so
            # the batch in it is nobody's - back to the queue with it.
            self.registry.take_back_batch(slave, slave.last_batch)
        slave.last_seq, slave.last_batch = msg.seq, None
        slave.queue = msg.queue
        self._give_back(slave, msg.cuts)
        self._apply(slave, msg)
        if self.paused or self.halted:
            self.control.on_news(slave, now)
        if slave.gone:
            self.endpoint.send(identity, protocol.quit_("goodbye"))  # it said BYE already
        elif msg.leaving:
            self.registry.leave(slave)
            self.waiting.pop(slave.id, None)
            self.endpoint.send(identity, protocol.quit_("goodbye"))
        elif self.closing or msg.want == 0:
            self._answer_idle(slave)
        elif self.stopping is not None or not self._dispatch(slave, msg.want, now):
            # Stopping, nothing more is handed out: every request waits its
            # longest (finished jobs still come in ACKs meanwhile), or slaves
            # would ask again at once for the whole --grace.
            idle_park = min(PARK_IDLE_SECONDS, slave.timeout_ms / 3000)
            holding = self.stopping is None and self.registry.held(slave)
            park = PARK_HOLDING_SECONDS if holding else idle_park
            self.waiting[slave.id] = (now + park, msg.want)

    @staticmethod
    def _request_connection(slave: SlaveRecord, identity: bytes) -> bytes:
        """`identity` if it is one of `slave`'s request connections (the HELLO's, or conn.N), else the HELLO's."""
        if slave.conn and identity.startswith(slave.conn + b".") and identity[len(slave.conn) + 1 :].isdigit():
            return identity
        return slave.identity

    def _foreign(self, slave: SlaveRecord, identity: bytes, bound: bytes | None) -> bool:
        """Does a message with `slave`'s token come from a connection other than the one it is bound to?

        A token travels in plaintext without a secret: whoever captured it
        could replay it.  It counts only on the connections of the slave it
        was issued to: the routing id its HELLO came from, the ones that
        HELLO named (``conn.N``: a Lazy Pirate retry opens the next one, and
        costs no rejoin) and, for the liveness thread, ``beat``.  Frames
        replayed from any other connection are refused.  (An attacker who
        also reads those names off the handshake and connects under them is
        beyond what a run without --secret-file can stop.)
        """
        if identity == bound:
            return False
        self.foreign_tokens += 1
        if self.foreign_tokens in (1, 10, 100) or self.foreign_tokens % 1000 == 0:
            log.warning("refused slave %s's token from another connection (%d so far)", slave.id, self.foreign_tokens)
        return True

    def _give_back(self, slave: SlaveRecord, cuts: list[tuple[int, int]]) -> None:
        """Jobs `slave` will not start after all: back to the queue, for whoever asks next."""
        for batch_id, keep in cuts:
            n = self.registry.give_back(slave, batch_id, keep)
            if n:
                if self.throttle is not None:
                    self.throttle.refund(n)  # never started: they do not count against --rate
                log.debug("slave %s gave back %d jobs of batch %d", slave.id, n, batch_id)

    def _apply(self, slave: SlaveRecord, msg: protocol.Report) -> None:
        """Record acknowledgements and failures, only for jobs handed to this slave."""
        self._apply_acks(slave, msg.acks)
        for failure in msg.failures:
            batch = slave.batches.get(failure.batch)
            if batch is None or not within([(failure.position, failure.position + 1)], batch.ranges):
                self._bad(None, f"slave {slave.id} reported a failure of a job it was not handed")
                continue
            try:
                self.failed_jobs.failed(self.ledger, failure, slave.id)
            except OSError as exc:
                self._stop_for_disk(f"cannot record a failed job in {self.config.failures_path}: {exc.strerror or exc}")
        if msg.failures:
            self.control.check_failures()

    def _apply_acks(self, slave: SlaveRecord, acks: list[tuple[int, list[tuple[int, int]]]]) -> None:
        for batch_id, ranges in acks:
            batch = slave.batches.get(batch_id)
            if batch is None and batch_id <= self.registry.next_batch:
                continue  # a batch whose jobs are all resolved already: nothing to learn
            if batch is None or not within(ranges, batch.ranges):
                self._bad(None, f"slave {slave.id} acknowledged jobs it was not handed (batch {batch_id})")
                continue
            slave.finished += self.ledger.mark_done(ranges)
            self.registry.settle(slave, batch_id)

    # --------------------------------------------------------- dispatch

    def _dispatch(self, slave: SlaveRecord, want: int, now: float) -> bool:
        """Send `slave` a batch of up to `want` jobs; False when there is none.

        When there is none and `slave` has nothing waiting either, the slave
        with the largest backlog is asked to give half of it back: its answer
        puts those jobs in the queue, and a parked request takes them.
        """
        live = self.registry.live_count() or 1
        n = max(1, min(want, MAX_BATCH, self.ledger.limit // (2 * live)))
        if self.paused or self.throttle is not None:
            n = 0 if self.paused else self.throttle.allowance(n, now)  # type: ignore[union-attr]
            if not n:
                return False  # paused, or too few tokens yet: the request waits, parked
        _, jobs, ranges = self.ledger.take(n, slave.id, alone=live == 1)
        if not jobs:
            if not self.registry.unstarted(slave):
                self._recall(slave, now)
            return False
        try:
            payload = protocol.pickle_jobs(jobs)
        except Exception:
            jobs, ranges = self.source.cut_at_unpicklable(jobs, ranges)
            if not jobs:
                return False
            payload = protocol.pickle_jobs(jobs)
        if self.throttle is not None:
            self.throttle.take(len(jobs))
        per_job = len(payload) / len(jobs)
        self.job_bytes = 0.9 * self.job_bytes + 0.1 * per_job if self.job_bytes else per_job
        self.ledger.stretch(self.job_bytes <= SMALL_JOB_BYTES)
        batch_id = self.registry.hand_out(slave, ranges)
        slave.last_batch = batch_id
        self.endpoint.send(slave.identity, protocol.jobs(batch_id, ranges, payload))
        return True

    def _recall(self, thief: SlaveRecord, now: float) -> None:
        found = self.registry.recall_from(thief, now)
        if found is not None:
            victim, n = found
            assert victim.beat_identity is not None
            self.endpoint.send(victim.beat_identity, protocol.recall(n))

    def _answer_idle(self, slave: SlaveRecord) -> None:
        """Reply to a slave that gets no jobs now: QUIT when the run is over."""
        if self.closing:
            slave.told_quit = True
            self.endpoint.send(slave.identity, protocol.quit_(self._quit_reason()))
        else:
            self.endpoint.send(slave.identity, protocol.no_jobs())

    def _serve_waiting(self, now: float) -> None:
        """Hand jobs to parked requests; answer those parked too long."""
        for slave_id, (deadline, want) in list(self.waiting.items()):
            slave = self.registry.get(slave_id)
            if slave is None:
                del self.waiting[slave_id]
                continue
            busy = self.closing or self.stopping is not None
            if not busy and self._dispatch(slave, want, now):
                del self.waiting[slave_id]
            elif self.closing or now >= deadline:
                del self.waiting[slave_id]
                self._answer_idle(slave)

    # ------------------------------------------------- checkpoint, status

    def _total_finished(self) -> int:
        return self.state.finished + self.ledger.finished

    def _resolved(self) -> int:
        return self.state.finished + self.state.failed + self.ledger.finished + self.ledger.failed

    def _checkpoint(self, complete: bool = False) -> None:
        if not self.config.retry_failed:  # a replay of failures leaves the state file alone
            self.saver.save(self.ledger, self.total, complete)
            if self.saver.error is None:
                self.checkpointed_at = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        """The run as tm-status shows it."""
        now = time.monotonic()
        rate_10s = self.rate.rate()
        elapsed = now - self.started
        resolved = self._resolved()
        if self.closing:
            state = "finished"
        elif self.stopping is not None or self.source.exhausted and not self.ledger.undispatched():
            state = "draining"  # nothing more to hand out: waiting for the jobs in flight
        elif self.paused:
            state = "paused"
        else:
            state = "running"
        return {
            "target": self.target,
            "kwargs": self.kwargs,
            "state": state,
            "finished": self._total_finished(),
            "failed": self.state.failed + self.ledger.failed,
            "in_flight": self.registry.in_flight(),
            "buffered": self.ledger.undispatched(),
            "size": self.config.size,
            "total": self.total,
            "percent": 100.0 * resolved / self.total if self.total else None,
            "rate_10s": rate_10s,
            "rate_overall": (self.ledger.finished + self.ledger.failed) / elapsed if elapsed > 0 else 0.0,
            "eta_seconds": status.eta_seconds(self.total, resolved, rate_10s),
            "elapsed": elapsed,
            "state_file": os.path.abspath(self.config.state_path),
            "failures_file": os.path.abspath(self.config.failures_path),
            "pid": os.getpid(),
            "ended": self.ended,
            "slaves": self.registry.rows(now),
            "paused": self.paused,
            "rate_limit": self.rate_limit,
            "max_failures": str(self.config.max_failures) if self.config.max_failures else None,
            "halted": self.halted,
        }

    # ------------------------------------------------------------ end

    def _finish(self, how: str) -> Outcome:
        duration = time.monotonic() - self.started  # the run, not the goodbyes after it
        self.ended = how
        self._tell_slaves_to_quit()
        complete = how == "complete"
        self._checkpoint(complete=complete)
        problem = self.disk_error or self.saver.error
        if self.config.retry_failed and complete:
            try:
                self.failed_jobs.finish_replay()
            except OSError as exc:
                problem = f"cannot rewrite the failures file {self.config.failures_path}: {exc.strerror or exc}"
        finished, failed = self.ledger.finished, self.ledger.failed
        any_failed = bool(self.state.failed + failed or self.failed_jobs.failed_again)
        summary = (
            f"{finished} finished, {failed} failed in {duration:.1f}s ({finished / max(duration, 1e-9):.0f} jobs/s)"
        )
        if any_failed:
            summary += f"; failed jobs are in {self.config.failures_path} (replay them with --retry-failed)"
        if self.bad_messages:
            summary += f"; {self.bad_messages} malformed messages ignored"
        if self.endpoint.refusals:
            summary += f"; {self.endpoint.refusals} connections refused"
        if self.foreign_tokens:
            summary += f"; {self.foreign_tokens} messages with a token from another connection refused"
        if not self.config.retry_failed:
            summary += f"; state in {self.config.state_path}"
        outcome = Outcome(
            1 if any_failed else 0, summary, finished=finished, failed=failed, duration=duration, served=True
        )
        if how == "interrupted":
            outcome.code = 128 + (self.stopping or signal.SIGINT)
            outcome.summary = (
                f"interrupted: {self._total_finished()} finished, run the same command to resume ({summary})"
            )
        elif how == "halted":
            outcome.code, outcome.summary = 1, self.control.halt_summary(summary)
        elif how == "source-error":
            outcome.code = 1
            what = (
                f"the job source stopped on {self.source.crash}"
                if self.source.crash
                else "get_jobs raised an exception"
            )
            outcome.error = f"{what}; fix it and run the same command to resume:\n{(self.source.error or '').rstrip()}"
        elif how == "unpicklable":
            outcome.code, outcome.error = 2, self.source.poison or ""
        if problem and not outcome.error:
            # Nothing is lost: every file still holds its last good contents,
            # which at worst makes the next run redo some jobs.
            outcome.code = 1
            outcome.error = f"{problem}; fix that and run the same command to resume"
        return outcome

    def _quit_reason(self) -> str:
        return protocol.QUIT_STOPPING if self.stopping is not None else "the run is over"

    def _tell_slaves_to_quit(self) -> None:
        """Tell every slave to quit, then answer stragglers with QUIT for a moment.

        A slave busy with long jobs may have nothing to ask; it is told
        anyway, on its request socket, which it watches while idle.
        """
        self.closing = True
        for slave in self.registry.slaves.values():
            if slave.live and not slave.told_quit:
                slave.told_quit = True
                self.endpoint.send(slave.identity, protocol.quit_(self._quit_reason()))
        now = time.monotonic()
        # Stay reachable until --linger seconds after start: slaves started with
        # the master (tm-spawn beside tm-master) then hear "quit" even if the
        # run was over before they could join, instead of finding no master.
        # Past that, a request that was already on its way when the run ended
        # arrives within moments: once none came for QUIET_SECONDS, every
        # slave has its QUIT and there is no one left to answer.
        linger_until = self.started + self.config.linger
        deadline = max(now + QUIT_LINGER_SECONDS, linger_until)
        quiet_until = now + QUIET_SECONDS
        while True:
            now = time.monotonic()
            self._serve_waiting(now)
            if now > deadline or now > max(quiet_until, linger_until):
                return
            messages = self.endpoint.receive(10)
            if messages:
                quiet_until = time.monotonic() + QUIET_SECONDS
            for frames in messages:
                self._handle(frames)
