"""The master: one loop that hands out batches of jobs and records their fate.

A filler greenlet pulls jobs from the user's iterator into the ledger while
there is room (at most ``--size`` jobs held, buffered or leased).  The main
loop answers slaves on a ROUTER socket: each REQUEST acknowledges finished
jobs, reports failed ones and asks for more; the reply is one batch, pickled
once.  A request that finds nothing to hand out is parked until jobs arrive.
Every second the loop writes the checkpoint and takes back the jobs of slaves
whose lease ran out.  Nothing a slave sends is ever unpickled: it is JSON,
validated by ``protocol`` and checked against what that slave was handed.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import gevent
import gevent.event
import zmq.green as zmq
from zmq.utils.monitor import recv_monitor_message

from taskmaster import checkpoint, failures, protocol, security
from taskmaster.errors import UsageError
from taskmaster.ledger import Ledger
from taskmaster.progress import Progress
from taskmaster.ranges import expand, to_ranges, within
from taskmaster.security import CurveKeys

log = logging.getLogger("taskmaster.master")

FILL_CHUNK = 2048  # jobs pulled from the iterator between two looks at the socket
MAX_BATCH = 5000  # jobs in one reply, at most
TICK_SECONDS = 0.1  # housekeeping period: progress, leases, checkpoint
QUIT_LINGER_SECONDS = 5.0  # how long the master waits to tell every slave to quit


@dataclass
class MasterConfig:
    address: str = "tcp://127.0.0.1:3050"
    size: int = 10000
    state_path: str = ""
    failures_path: str = ""
    reset: bool = False
    retry_failed: bool = False
    lease_timeout: float = 30.0
    max_retries: int = 3
    grace: float = 10.0
    checkpoint_interval: float = 1.0
    progress: bool = True


@dataclass
class Outcome:
    """How a run ended: the exit code and what to tell the user."""

    code: int
    summary: str = ""
    error: str = ""


@dataclass
class Batch:
    id: int
    ranges: list[list[int]]
    expired: bool = False  # its lease ran out and its jobs were requeued


@dataclass
class SlaveRecord:
    id: str
    host: str
    pid: int
    concurrency: int
    timeout_ms: int
    identity: bytes
    last_seen: float
    batches: dict[int, Batch] = field(default_factory=dict)
    lost: bool = False  # silent past its lease
    gone: bool = False  # said BYE
    finished: int = 0
    told_quit: bool = False

    @property
    def live(self) -> bool:
        return not (self.lost or self.gone)


class Master:
    def __init__(
        self,
        get_jobs: Callable[..., Any],
        target: str,
        kwargs: dict[str, str],
        config: MasterConfig,
        keys: CurveKeys | None = None,
    ) -> None:
        self.get_jobs = get_jobs
        self.keys = keys
        self.refusals = 0
        self.target = target
        self.kwargs = kwargs
        self.config = config
        self.run_id = uuid.uuid4().hex
        self.slaves: dict[str, SlaveRecord] = {}
        self.waiting: dict[str, float] = {}  # parked requests: slave id -> since
        self.next_batch = 0
        self.bad_messages = 0
        self.exhausted = False  # the iterator will give no more jobs
        self.source_error: str | None = None
        self.poison: str | None = None  # why the iterator was cut at an unpicklable job
        self.stopping: int | None = None  # the signal that asked us to stop
        self.stop_deadline = 0.0
        self.closing = False  # the run is over: every slave is told to quit
        self.space = gevent.event.Event()
        self.state: checkpoint.State | None = None
        self.retry_entries: list[dict] = []
        self.refailed: list[dict] = []
        self.failure_log = failures.FailureLog(config.failures_path)
        self.ledger: Ledger
        self.iterator: Iterator[Any]
        self.socket: Any = None

    # ------------------------------------------------------------- set-up

    def prepare(self) -> Outcome | None:
        """Load the state and open the iterator; an Outcome if there is nothing to run.

        Raises UsageError (before anything is written) for a bad state file.
        """
        cfg = self.config
        if cfg.retry_failed:
            self.retry_entries = self.failure_log.read()
            if not self.retry_entries:
                return Outcome(0, f"no failed jobs to retry in {cfg.failures_path}")
            self.ledger = Ledger(cfg.size)
            self.iterator = iter([entry["value"] for entry in self.retry_entries])
            return None
        state = None if cfg.reset else checkpoint.load(cfg.state_path, self.target, self.kwargs)
        if state is not None and state.complete:
            return Outcome(
                0,
                f"this run already finished ({state.finished} jobs finished, {state.failed} failed, "
                f"state file {cfg.state_path}); use --reset to run it again",
            )
        self.state = state or checkpoint.State(self.target, self.kwargs)
        if cfg.reset and os.path.exists(cfg.failures_path):
            self.failure_log.rewrite([])
        if state is not None and state.has_anchor:
            log.info("resuming at job %d (%d finished before)", state.position, state.finished)
            self.ledger = Ledger(cfg.size, start=state.position, resolved_ahead=state.resolved)
            self._open_iterator(last=state.anchor)
        else:
            self.ledger = Ledger(cfg.size)
            self._open_iterator()
        return None

    def _open_iterator(self, **last: Any) -> None:
        try:
            self.iterator = iter(self.get_jobs(**last, **self.kwargs))
        except Exception:
            self.iterator = iter(())
            self.source_error = traceback.format_exc()

    def bind(self) -> None:
        context = zmq.Context.instance()
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_INBOUND_BYTES + 4096)
        if self.config.address.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        self.poller = zmq.Poller()
        self.zap = self.monitor = None
        if self.keys is not None:
            # ZAP: libzmq asks this socket whether each connecting peer may in.
            self.zap = context.socket(zmq.REP)
            self.zap.setsockopt(zmq.LINGER, 0)
            self.zap.bind(security.ZAP_ENDPOINT)
            self.poller.register(self.zap, zmq.POLLIN)
            self.keys.secure_server(sock)
            self.monitor = sock.get_monitor_socket(security.HANDSHAKE_FAILED)
            self.poller.register(self.monitor, zmq.POLLIN)
        try:
            sock.bind(self.config.address)
        except zmq.ZMQError as exc:
            self._close_sockets(sock)
            if exc.errno == zmq.EADDRINUSE:
                raise UsageError(
                    f"address {self.config.address} is already in use: stop the master running there, "
                    "or pass another --address"
                ) from None
            raise UsageError(f"cannot listen on {self.config.address}: {exc}; pass --address tcp://HOST:PORT") from None
        self.poller.register(sock, zmq.POLLIN)
        self.socket = sock
        if self.keys is None and not security.is_loopback(self.config.address):
            log.warning("%s", security.exposure_warning(self.config.address))

    def _close_sockets(self, sock: Any) -> None:
        if self.monitor is not None:
            sock.disable_monitor()
            self.monitor.close(0)
        if self.zap is not None:
            self.zap.close(0)
        sock.close(0)

    # -------------------------------------------------------------- run

    def run(self) -> Outcome:
        """Prepare, bind, serve until the run ends; the Outcome says how."""
        early = self.prepare()
        if early is not None:
            return early
        self.bind()
        self.progress = Progress(self.config.progress, show_queue=True)
        self.started = time.monotonic()
        filler = gevent.spawn(self._fill)
        handlers = [gevent.signal_handler(s, self._on_signal, s) for s in (signal.SIGINT, signal.SIGTERM)]
        try:
            outcome = self._serve()
        finally:
            filler.kill()
            for handler in handlers:
                handler.cancel()
            self.progress.finish()
            self.failure_log.close()
            self._close_sockets(self.socket)
        return outcome

    def _on_signal(self, signum: int) -> None:
        now = time.monotonic()
        if self.stopping is None:
            self.stopping = signum
            self.stop_deadline = now + self.config.grace
            log.warning(
                "stopping: waiting up to %.0fs for the jobs in flight (Ctrl-C again to stop now)", self.config.grace
            )
        else:
            self.stop_deadline = now

    def _fill(self) -> None:
        """Pull jobs from the iterator whenever the ledger has room."""
        ledger = self.ledger
        while not self.exhausted:
            room = ledger.space()
            if room < min(FILL_CHUNK, ledger.size // 4 or 1) and ledger.undispatched() > 0 or room == 0:
                self.space.clear()
                self.space.wait()
                continue
            n = min(room, FILL_CHUNK)
            try:
                chunk = list(islice(self.iterator, n))
            except Exception:
                self.source_error = traceback.format_exc()
                self.exhausted = True
                return
            if self.exhausted:  # cut meanwhile (unpicklable job): drop what came after
                return
            if chunk:
                ledger.add(chunk)
            if len(chunk) < n:
                self.exhausted = True
                return
            gevent.sleep(0)

    def _serve(self) -> Outcome:
        next_tick = 0.0
        next_checkpoint = time.monotonic() + self.config.checkpoint_interval
        while True:
            timeout = 5 if self.waiting else int(TICK_SECONDS * 1000)
            self._receive(timeout)
            now = time.monotonic()
            if self.waiting:
                if not self.exhausted and self.ledger.space() > 0:
                    self.space.set()
                    gevent.sleep(0)  # let the filler use the room the acknowledgements made
                self._serve_waiting(now)
            if now >= next_tick:
                next_tick = now + TICK_SECONDS
                self._expire_leases(now)
                self.progress.update(self._total_finished(), f"{self.ledger.undispatched()}/{self.config.size}")
            if now >= next_checkpoint:
                next_checkpoint = now + self.config.checkpoint_interval
                self._checkpoint()
            if self.ledger.space() > 0:
                self.space.set()
            ended = self._ended(now)
            if ended:
                return self._finish(ended)

    def _ended(self, now: float) -> str:
        if self.stopping is not None:
            held = sum(self._held(s) for s in self.slaves.values() if s.live)
            return "interrupted" if held == 0 or now >= self.stop_deadline else ""
        if self.exhausted and self.ledger.drained():
            if self.source_error:
                return "source-error"
            return "unpicklable" if self.poison else "complete"
        return ""

    # --------------------------------------------------------- messages

    def _receive(self, timeout_ms: int) -> None:
        ready = dict(self.poller.poll(timeout_ms))
        if self.zap is not None and self.zap in ready:
            self._authenticate()
        if self.monitor is not None and self.monitor in ready:
            self._note_refusals()
        if self.socket not in ready:
            return
        for _ in range(512):
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self._handle(frames)

    def _authenticate(self) -> None:
        """Answer libzmq's ZAP requests: only slaves holding the secret get in."""
        while True:
            try:
                request = self.zap.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            version, request_id, _domain, _peer, _identity, mechanism = request[:6]
            ok = self.keys is not None and self.keys.accepts(mechanism, request[6:])
            status = [b"200", b"OK"] if ok else [b"400", b"secrets differ"]
            self.zap.send_multipart([version, request_id, *status, b"", b""])

    def _note_refusals(self) -> None:
        while True:
            try:
                recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self.refusals += 1
            if self.refusals in (1, 100) or self.refusals % 10000 == 0:
                log.warning(
                    "refused a connection (%d so far): the peer's secret differs or it has none; "
                    "slaves need the same --secret-file as the master",
                    self.refusals,
                )

    def _send(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self.socket.send_multipart([identity, *frames], zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # the peer is gone or not keeping up; it will ask again

    def _bad(self, identity: bytes | None, reason: str) -> None:
        self.bad_messages += 1
        if self.bad_messages in (1, 10, 100) or self.bad_messages % 1000 == 0:
            log.warning("ignored a malformed message (%d so far): %s", self.bad_messages, reason)
        if identity is not None:
            self._send(identity, protocol.reject(reason))

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
        if isinstance(msg, protocol.Heartbeat):
            slave = self.slaves.get(msg.slave)
            if slave is not None and msg.run == self.run_id:
                self._seen(slave, now)
            return
        if isinstance(msg, protocol.Hello):
            self._hello(identity, msg, now)
            return
        slave = self.slaves.get(msg.slave)
        if msg.run != self.run_id or slave is None:
            # Acknowledgements meant for another run of a master: their
            # positions may not be this run's jobs, so they are not counted.
            self._send(identity, protocol.reset("this master does not know that run; say hello again"))
            return
        slave.identity = identity
        self._seen(slave, now)
        self._apply_report(slave, msg)
        if msg.leaving:
            slave.gone = True
            self._take_back(slave)
            self.waiting.pop(slave.id, None)
            self._send(identity, protocol.quit_("goodbye"))
        elif self.closing or self.stopping is not None or msg.want == 0:
            self._answer_idle(slave)
        elif not self._dispatch(slave, msg.want):
            self.waiting[slave.id] = now

    def _hello(self, identity: bytes, msg: protocol.Hello, now: float) -> None:
        slave = self.slaves.get(msg.slave)
        if slave is None:
            slave = SlaveRecord(msg.slave, msg.host, msg.pid, msg.concurrency, msg.timeout_ms, identity, now)
            self.slaves[msg.slave] = slave
            log.info("slave %s joined (host %s, pid %d, concurrency %d)", msg.slave, msg.host, msg.pid, msg.concurrency)
        slave.identity = identity
        slave.gone = False
        self._seen(slave, now)
        self._send(identity, protocol.welcome(self.run_id, self.config.lease_timeout, self.config.lease_timeout / 3))

    def _seen(self, slave: SlaveRecord, now: float) -> None:
        slave.last_seen = now
        if slave.lost:
            slave.lost = False
            log.info("slave %s is back", slave.id)

    def _apply_report(self, slave: SlaveRecord, msg: protocol.Report) -> None:
        ledger = self.ledger
        for batch_id, ranges in msg.acks:
            batch = slave.batches.get(batch_id)
            if batch is None or not within(ranges, batch.ranges):
                self._bad(None, f"slave {slave.id} acknowledged jobs it was not handed (batch {batch_id})")
                continue
            slave.finished += ledger.mark_done(ranges)
            if ledger.unresolved(batch.ranges) == 0:
                del slave.batches[batch_id]
        for failure in msg.failures:
            batch = slave.batches.get(failure.batch)
            if batch is None or not within([(failure.position, failure.position + 1)], batch.ranges):
                self._bad(None, f"slave {slave.id} reported a failure of a job it was not handed")
                continue
            self._job_failed(slave, failure)

    def _job_failed(self, slave: SlaveRecord, failure: protocol.Failure) -> None:
        ledger, position = self.ledger, failure.position
        if not ledger.is_pending(position):
            return
        attempts = ledger.attempts.get(position, 0) + 1
        ledger.attempts[position] = attempts
        if attempts <= self.config.max_retries:
            log.info(
                "job %d failed on %s (%s: %s); retry %d of %d",
                position,
                slave.id,
                failure.type,
                failure.message,
                attempts,
                self.config.max_retries,
            )
            ledger.retry(position, slave.id)
            return
        job = ledger.value(position)
        real_position = self.retry_entries[position]["position"] if self.config.retry_failed else position
        entry = failures.record(
            real_position, job, failure.type, failure.message, failure.traceback, attempts, slave.id
        )
        if self.config.retry_failed:
            self.refailed.append(entry)
        else:
            self.failure_log.append(entry)  # durable before the job counts as resolved
        ledger.mark_failed(position)
        log.error(
            "job %d failed for good after %d attempts: %s: %s", real_position, attempts, failure.type, failure.message
        )

    # --------------------------------------------------------- dispatch

    def _live_count(self) -> int:
        return sum(1 for s in self.slaves.values() if s.live) or 1

    def _dispatch(self, slave: SlaveRecord, want: int) -> bool:
        """Send `slave` a batch of up to `want` jobs; False when there is none."""
        live = self._live_count()
        n = max(1, min(want, MAX_BATCH, self.config.size // (2 * live)))
        _, jobs, ranges = self.ledger.take(n, slave.id, alone=live == 1)
        if not jobs:
            return False
        try:
            payload = protocol.pickle_jobs(jobs)
        except Exception:
            jobs, ranges = self._cut_at_unpicklable(jobs, ranges)
            if not jobs:
                return False
            payload = protocol.pickle_jobs(jobs)
        self.next_batch += 1
        slave.batches[self.next_batch] = Batch(self.next_batch, ranges)
        self._send(slave.identity, protocol.jobs(self.next_batch, ranges, payload))
        return True

    def _cut_at_unpicklable(self, jobs: list, ranges: list[list[int]]) -> tuple[list, list[list[int]]]:
        """Stop the run before the first job that cannot be pickled.

        Jobs before it run and are checkpointed; the master then exits with
        a message naming the job, and the same command resumes from there
        once get_jobs is fixed.
        """
        positions = expand(ranges)
        for index, job in enumerate(jobs):
            try:
                pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                position = positions[index]
                self.poison = (
                    f"job at position {position} cannot be pickled ({checkpoint._short_repr(job)}): "
                    f"{type(exc).__name__}: {exc}; the jobs before it are finished and saved; make get_jobs "
                    "yield picklable jobs and run the same command to continue"
                )
                self.exhausted = True
                self.ledger.truncate(position)
                return jobs[:index], to_ranges(positions[:index])
        return jobs, ranges

    def _answer_idle(self, slave: SlaveRecord) -> None:
        """Reply to a slave that gets no jobs now: QUIT when the run is over."""
        if self.closing:
            slave.told_quit = True
            self._send(slave.identity, protocol.quit_("the run is over"))
        else:
            self._send(slave.identity, protocol.no_jobs())

    def _serve_waiting(self, now: float) -> None:
        """Hand jobs to parked requests; answer those parked too long."""
        for slave_id, since in list(self.waiting.items()):
            slave = self.slaves[slave_id]
            busy = self.closing or self.stopping is not None
            if not busy and self._dispatch(slave, protocol.MAX_WANT):
                del self.waiting[slave_id]
            elif busy or now - since > min(1.0, slave.timeout_ms / 3000):
                del self.waiting[slave_id]
                self._answer_idle(slave)

    # ------------------------------------------------------- leases

    def _held(self, slave: SlaveRecord) -> int:
        return sum(self.ledger.unresolved(b.ranges) for b in slave.batches.values() if not b.expired)

    def _take_back(self, slave: SlaveRecord) -> int:
        requeued = 0
        for batch in slave.batches.values():
            if not batch.expired:
                batch.expired = True
                requeued += self.ledger.requeue(batch.ranges)
        return requeued

    def _expire_leases(self, now: float) -> None:
        for slave in list(self.slaves.values()):
            for batch_id in [b.id for b in slave.batches.values() if self.ledger.unresolved(b.ranges) == 0]:
                del slave.batches[batch_id]
            if slave.live and now - slave.last_seen > self.config.lease_timeout:
                slave.lost = True
                n = self._take_back(slave)
                self.waiting.pop(slave.id, None)
                log.warning(
                    "slave %s (host %s, pid %d) silent for %.0fs: %d of its jobs go to other slaves",
                    slave.id,
                    slave.host,
                    slave.pid,
                    now - slave.last_seen,
                    n,
                )
            if not slave.live and not slave.batches and now - slave.last_seen > 10 * self.config.lease_timeout:
                del self.slaves[slave.id]

    # ------------------------------------------------------- checkpoint

    def _total_finished(self) -> int:
        base = self.state.finished if self.state else 0
        return base + self.ledger.finished

    def _checkpoint(self, complete: bool = False) -> None:
        if self.config.retry_failed or self.state is None:
            return
        state = self.state
        anchor = self.ledger.anchor()
        new = checkpoint.State(
            self.target,
            self.kwargs,
            position=state.position,
            has_anchor=state.has_anchor,
            anchor=state.anchor,
            resolved=state.resolved,
            finished=state.finished + self.ledger.finished,
            failed=state.failed + self.ledger.failed,
            complete=complete,
            total=state.total,
        )
        if anchor is not None:
            new.position, new.anchor, new.resolved = anchor
            new.has_anchor = True
        elif not complete and not state.has_anchor and not new.finished:
            return  # nothing pulled yet, nothing to remember
        checkpoint.save(self.config.state_path, new)

    # ------------------------------------------------------------ end

    def _finish(self, how: str) -> Outcome:
        self._tell_slaves_to_quit()
        complete = how == "complete"
        self._checkpoint(complete=complete)
        if self.config.retry_failed and complete:
            self.failure_log.rewrite(self.refailed)
        duration = time.monotonic() - self.started
        finished = self.ledger.finished
        failed = self.ledger.failed
        total_failed = failed + (self.state.failed if self.state else 0)
        rate = finished / duration if duration > 0 else 0.0
        summary = f"{finished} finished, {failed} failed in {duration:.1f}s ({rate:.0f} jobs/s)"
        if total_failed or self.refailed:
            summary += f"; failed jobs are in {self.config.failures_path} (replay them with --retry-failed)"
        if self.bad_messages:
            summary += f"; {self.bad_messages} malformed messages ignored"
        if self.refusals:
            summary += f"; {self.refusals} connections refused"
        if how == "interrupted":
            code = 128 + (self.stopping or signal.SIGINT)
            summary = f"interrupted: {self._total_finished()} finished, run the same command to resume ({summary})"
            return Outcome(code, summary)
        if how == "source-error":
            return Outcome(
                1,
                summary,
                f"get_jobs raised an exception; fix it and run the same command to resume:\n"
                f"{self.source_error.rstrip()}",
            )
        if how == "unpicklable":
            return Outcome(2, summary, self.poison or "")
        return Outcome(1 if total_failed or self.refailed else 0, summary)

    def _tell_slaves_to_quit(self) -> None:
        """Answer every slave with QUIT until each live one has heard it."""
        self.closing = True
        deadline = time.monotonic() + QUIT_LINGER_SECONDS
        while True:
            self._serve_waiting(time.monotonic())
            if all(s.told_quit or not s.live for s in self.slaves.values()) or time.monotonic() > deadline:
                return
            self._receive(50)
