"""The master: hands out batches of jobs and records their fate.

A filler greenlet pulls jobs from the user's iterator into the ledger while
there is room (at most ``--size`` jobs held, buffered or leased).  The master
answers slaves: each REQUEST acknowledges finished jobs, reports failed ones
and asks for more; the reply is one batch, pickled once.  A request that
finds nothing to hand out is parked until jobs arrive (``dispatch``).  Every
second the checkpoint is written; every tick the jobs of slaves whose lease
ran out are taken back.  Nothing a slave sends is ever unpickled: it is JSON,
validated by ``protocol`` and checked against what that slave was handed.

The master is driven by two calls: ``handle(frames, now)`` for each message
and ``tick(now)`` for the passing of time; ``process`` makes those calls in a
real process, tests make them in-process.  Where a run starts is decided in
``start``, how it ends in ``shutdown`` and ``outcome``.

A REQUEST goes down one pass in ``handle``, each stop calling down, none
back up into the master (the package's docstring names them): decode
(``protocol``), admit (``_admit``: ``admission.TokenBinding``), settle
(``registry.requested``, ``Reports.take_back``, then ``Reports.record``,
which returns ``Findings``), act on what was found (``_act_on``: a bad part
counted, a disk error stops the run, failures asked of ``Controls``, whose
``Due`` the master carries out), then hand out and reply
(``Dispatcher.answer``, or QUIT).  tm-status and /metrics read a
``status.RunView`` the master makes when asked (``view``), not the master.
"""

from __future__ import annotations

import logging
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent

from taskmaster.config import MasterConfig
from taskmaster.logformat import now_and_then
from taskmaster.master import checkpoint, failures_file, status
from taskmaster.master.admission import ANSWERED, Channel, TokenBinding, Verdict
from taskmaster.master.control import Controls, Due, state_reply
from taskmaster.master.dispatch import Dispatcher
from taskmaster.master.endpoint import MasterEndpoint, Transport
from taskmaster.master.ledger import Ledger
from taskmaster.master.outcome import EndDetail, EndReason, Outcome, Tally
from taskmaster.master.outcome import build as build_outcome
from taskmaster.master.pace import Pace
from taskmaster.master.registry import SlaveRecord, SlaveRegistry, queue_after_give_back
from taskmaster.master.reports import Findings, Reports
from taskmaster.master.shutdown import Phase, Shutdown
from taskmaster.master.source import JobSource
from taskmaster.master.start import open_run
from taskmaster.progress import Progress
from taskmaster.wire import protocol
from taskmaster.wire.security import CurveKeys

log = logging.getLogger("taskmaster.master")

SlaveMessage = protocol.Report | protocol.Ack | protocol.Heartbeat | protocol.GiveBack  # those with a token
TICK_SECONDS = 0.1  # housekeeping period: progress, leases, rate (`process` ticks at least this often)
STALL_SECONDS = 1.0  # ticks this far apart mean the master itself stalled (they come every TICK_SECONDS)


class Master:
    def __init__(
        self,
        get_jobs: Callable[..., Any],
        target: str,
        kwargs: dict[str, str],
        config: MasterConfig,
        keys: CurveKeys | None = None,
        count_jobs: Callable[..., Any] | None = None,
        endpoint: Transport | None = None,
    ) -> None:
        self.get_jobs = get_jobs
        self.count_jobs = count_jobs
        self.target = target
        self.kwargs = kwargs
        self.config = config
        # The transport: the real ROUTER socket, or (in-process tests) one in memory.
        self.endpoint: Transport = endpoint if endpoint is not None else MasterEndpoint(config.address, keys)
        self.run_id = uuid.uuid4().hex
        self.bad_messages = 0
        self.shutdown = Shutdown(config.grace, config.linger)  # the phase: running, stopping, closing
        self.disk_error: str | None = None  # a failed job could not be recorded: stop now
        self.ended: EndReason | None = None  # how the run ended: tm-status --watch reports it
        self.duration = 0.0  # from the start to the end of the run (set at its end)
        self.resumed_from = checkpoint.State(target, kwargs)  # the resume base: what earlier runs did (none yet)
        self.failed_jobs = failures_file.FailedJobs(config.failures_path, config.max_retries)
        self.rate = status.RateMeter()
        self.total: int | None = config.total
        self.started = time.monotonic()
        self.checkpointed_at: float | None = None  # when the state file last held our progress (monotonic)
        # Live settings (tm-ctl and --max-failures change them): handing out
        # stops while paused or halted, and --rate paces it.
        self.pace = Pace(config.rate, self.started)
        self.next_tick = 0.0  # when the housekeeping of `tick` is due next
        self.last_tick = 0.0  # when `tick` last ran: a long gap is a stall of the master's own
        self.next_checkpoint = 0.0
        self.progress = Progress(False, show_queue=True)  # the real one comes with `start`
        self.ledger: Ledger
        self.registry: SlaveRegistry
        self.binding: TokenBinding  # a token counts only on its slave's own connections (made by `prepare`)
        self.source: JobSource
        self.saver: checkpoint.Saver
        self.dispatcher: Dispatcher  # hands out batches, parks requests that find none (made by `prepare`)
        self.reports: Reports  # records what slaves report (made by `prepare`)
        self.control: Controls  # tm-ctl and --max-failures (made by `prepare`)

    # ------------------------------------------------------------- set-up

    def prepare(self) -> Outcome | None:
        """Load the state and open the iterator; an Outcome if there is nothing to run.

        Raises UsageError (before anything is written) for a bad state file.
        """
        opened = open_run(self.config, self.resumed_from, self.get_jobs, self.count_jobs, self.failed_jobs)
        if isinstance(opened, Outcome):
            return opened
        self.ledger, self.source, self.total = opened.ledger, opened.source, opened.total
        self.source.job_repr = self.config.job_repr
        self.resumed_from = opened.resumed_from
        self.registry = SlaveRegistry(self.ledger, self.config.lease_timeout)
        self.binding = TokenBinding(self.registry)
        self.saver = checkpoint.Saver(self.config.state_path, self.resumed_from)
        self.dispatcher = Dispatcher(
            self.ledger, self.registry, self.source, self.pace, self.shutdown, self.endpoint.send
        )
        self.reports = Reports(self.ledger, self.registry, self.pace, self.failed_jobs)
        secure = self.endpoint.keys is not None
        self.control = Controls(
            self.config, secure, self.pace, self.ledger, self.registry, self.shutdown, self.endpoint.send
        )
        return None

    # -------------------------------------------------------------- run

    def start(self, now: float) -> None:
        """The run starts at `now`: its clock, its progress bar, its first checkpoint time."""
        self.progress = Progress(self.config.progress, show_queue=True, total=self.total)
        self.started = now
        self.next_tick = 0.0
        self.next_checkpoint = now + self.config.checkpoint_interval

    @property
    def phase(self) -> Phase:
        return self.shutdown.phase

    def on_signal(self, signum: int) -> None:
        """SIGINT, SIGTERM (tm-ctl stop and halting too): stop, waiting for the jobs in flight; again: now."""
        self.stop(signum, time.monotonic())

    def stop(self, signum: int, now: float) -> None:
        """Asked to stop at `now` (as by signal `signum`): see taskmaster.shutdown."""
        if self.shutdown.stop(signum, now):
            log.warning("stopping: waiting up to %gs for the jobs in flight (again to stop now)", self.config.grace)

    def stop_for_disk(self, error: str, now: float) -> None:
        """Stop at once: a job that cannot be recorded must not be counted as resolved."""
        if self.disk_error is None:
            log.error("%s; stopping", error)
            self.disk_error = error
        self.shutdown.stop_now(signal.SIGTERM, now)

    def tick(self, now: float) -> Outcome | None:
        """The time is `now`: serve parked requests, take back expired leases,
        show progress, checkpoint, answer pending pauses, see whether the run
        ended; the Outcome once it ended and the master lingered (see taskmaster.shutdown).
        """
        if self.last_tick and now - self.last_tick > STALL_SECONDS:
            # The loop was held up (a slow disk, a pause of the process): the
            # heartbeats of that time wait unread in the socket, so the slaves'
            # silence proves nothing - leases must not run out for it.
            self.registry.excuse(now - self.last_tick)
        self.last_tick = now
        if self.phase is Phase.CLOSING:
            self.dispatcher.serve_parked(now)
            everyone_left = self.registry.live_count() == 0
            return self._finish() if self.shutdown.lingered(now, everyone_left) else None
        if self.ledger.space() > 0 and not self.source.exhausted:
            self.source.wake()
            if self.dispatcher.parked:
                gevent.sleep(0)  # let the filler use the room the acknowledgements made
        if self.dispatcher.parked:
            self.dispatcher.serve_parked(now)
        if self.control.pending:
            self._carry_out(self.control.answer_settled(now), now)
        if now >= self.next_tick:
            self.next_tick = now + TICK_SECONDS
            for slave in self.registry.expire(now):
                self.dispatcher.forget(slave.id)
            self.rate.sample(now, self.resolved())
            self.show_progress()
            self._carry_out(self.control.check_failures(now), now)
            if self.pace.holding:
                self.control.recall_again(now)
        if now >= self.next_checkpoint:
            self.next_checkpoint = now + self.config.checkpoint_interval
            self._checkpoint()
        reason = self._end_reason(now)
        if reason is not None:
            self._close(reason, now)
        return None

    def show_progress(self) -> None:
        queue = f"{self.buffered()}/{self.ledger.limit}"
        self.progress.update(self.finished_overall(), queue, self.resolved(), paused=self.pace.paused)

    def _end_reason(self, now: float) -> EndReason | None:
        """Why the run is over, if it is."""
        if self.phase is Phase.STOPPING:
            if self.shutdown.wait_over(self.registry.in_flight(), now):
                return EndReason.HALTED if self.pace.halted else EndReason.INTERRUPTED
            return None
        if self.source.exhausted and self.ledger.drained():
            if self.source.error:
                return EndReason.SOURCE_ERROR
            return EndReason.UNPICKLABLE if self.source.unpicklable_error else EndReason.COMPLETE
        return None

    # --------------------------------------------------------- messages

    def bad(self, identity: bytes | None, reason: str) -> None:
        """A malformed or impossible message: counted, logged now and then, and refused if it wants an answer."""
        self.bad_messages += 1
        if now_and_then(self.bad_messages):
            log.warning("ignored a malformed message (%d so far): %s", self.bad_messages, reason)
        if identity is not None:
            self.endpoint.send(identity, protocol.reject(reason))

    def handle(self, frames: list[bytes], now: float) -> None:
        """Handle one message (identity frame first) that arrived at time `now`."""
        if len(frames) < 2:
            self.bad(None, "no body")
            return
        identity = frames[0]
        if self.phase is Phase.CLOSING:
            self.shutdown.heard(now)
        try:
            msg = protocol.decode_from_slave(frames[1:])
        except protocol.ProtocolError as exc:
            self.bad(identity, str(exc))
            return
        if isinstance(msg, protocol.Ack):
            slave = self._admit(identity, msg, Channel.ACK)
            if slave is not None:
                self.registry.seen(slave, now)
                self._act_on(self.reports.record(slave, msg), now)
        elif isinstance(msg, (protocol.Heartbeat, protocol.GiveBack)):
            slave = self._admit(identity, msg, Channel.BEAT)
            if slave is not None:
                self.registry.seen(slave, now)
                if isinstance(msg, protocol.GiveBack):
                    self.reports.take_back(slave, msg.cuts)
                    self.registry.note_queue(slave, queue_after_give_back(slave.queue, msg.queue, msg.cuts))
                    if self.pace.holding:
                        self._carry_out(self.control.on_news(slave, now), now)
                    elif self.dispatcher.parked:
                        # At once, to the dry slave it was recalled for: a request
                        # from another slave, or the giver's own next one, must not
                        # take the jobs first.
                        self.dispatcher.serve_parked(now)
        elif isinstance(msg, protocol.Hello):
            self._hello(identity, msg, now)
        elif isinstance(msg, protocol.StatusRequest):
            self.endpoint.send(identity, protocol.status_reply(self.snapshot()))
        elif isinstance(msg, protocol.ControlRequest):
            self._carry_out(self.control.handle(identity, msg, now), now)
        else:
            self._on_request(identity, msg, now)

    def _hello(self, identity: bytes, msg: protocol.Hello, now: float) -> None:
        if self.phase is Phase.CLOSING:
            self.endpoint.send(identity, protocol.quit_(self.shutdown.quit_reason()))
            return
        known = self.registry.get(msg.slave)
        if known is not None and self.binding.stale_hello(known, msg.conn.encode(), identity):
            return  # a late copy from a connection the slave gave up: it was welcomed on a newer one
        slave = self.registry.join(msg.slave, msg.host, msg.pid, msg.concurrency, msg.timeout_ms, identity, now)
        if slave is None:
            self.bad(identity, "too many slaves")
            return
        # A new incarnation asks afresh: the old one's parked request gets no answer.
        self.dispatcher.forget(slave.id)
        self.registry.hello(slave, msg.beat.encode() if msg.beat else None, msg.conn.encode())
        self.binding.opened(slave, identity, known.newest_conn if known is not None else 0)
        lease = self.config.lease_timeout
        self.endpoint.send(identity, protocol.welcome(self.run_id, slave.token, lease, lease / 3))

    def _admit(self, identity: bytes, msg: SlaveMessage, channel: Channel) -> SlaveRecord | None:
        """The slave `msg` may speak for, or None: a refused REQUEST is told why (RESET), anything else ignored."""
        slave = self.registry.get(msg.slave)
        verdict = self.binding.admit(slave, msg.run, self.run_id, msg.token, identity, channel)
        if verdict is Verdict.ADMITTED:
            return slave
        if channel is Channel.REQUEST and verdict in ANSWERED:
            self.endpoint.send(identity, protocol.reset(verdict.value))
        return None

    def _on_request(self, identity: bytes, msg: protocol.Report, now: float) -> None:
        """A REQUEST (or BYE): record what it reports, then answer it - jobs, NO_JOBS, QUIT or parked."""
        slave = self._admit(identity, msg, Channel.REQUEST)
        if slave is None:
            return
        self.registry.requested(slave, identity, msg.seq, msg.queue, now)
        self.reports.take_back(slave, msg.cuts)
        self._act_on(self.reports.record(slave, msg), now)
        if self.pace.holding:
            self._carry_out(self.control.on_news(slave, now), now)
        if slave.gone:
            self.endpoint.send(identity, protocol.quit_("goodbye"))  # it said BYE already
        elif msg.leaving:
            self.registry.leave(slave)
            self.dispatcher.forget(slave.id)
            self.endpoint.send(identity, protocol.quit_("goodbye"))
        else:
            self.dispatcher.answer(slave, msg.want, now, reported_failures=bool(msg.failures))

    def _act_on(self, found: Findings, now: float) -> None:
        """What a report showed: malformed parts counted, a failure not recorded stops the run, --max-failures."""
        for reason in found.bad:
            self.bad(None, reason)
        for error in found.disk_errors:
            self.stop_for_disk(error, now)
        if found.failures:
            self._carry_out(self.control.check_failures(now), now)

    def _carry_out(self, due: Due, now: float) -> None:
        """What tm-ctl or --max-failures left to do: stop as SIGTERM would, then answer tm-ctl with the state."""
        if due.stop:
            self.stop(signal.SIGTERM, now)
        if not due.replies:
            return
        snap = self.snapshot()
        stopping = self.shutdown.stop_signal is not None
        for reply in due.replies:
            answer = protocol.control_reply(state_reply(snap, reply.command, reply.unsettled, stopping))
            for identity in reply.identities:
                self.endpoint.send(identity, answer)

    # ------------------------------------------------- checkpoint, status

    def view(self) -> status.RunView:
        """The run as tm-status and /metrics read it, now: its parts and where it stands."""
        return status.RunView(
            target=self.target,
            kwargs=self.kwargs,
            config=self.config,
            ledger=self.ledger,
            registry=self.registry,
            source=self.source,
            pace=self.pace,
            shutdown=self.shutdown,
            failed_jobs=self.failed_jobs,
            resumed_from=self.resumed_from,
            rate=self.rate,
            started=self.started,
            total=self.total,
            ended=self.ended,
            checkpointed_at=self.checkpointed_at,
        )

    def buffered(self) -> int:
        """Jobs pulled from the iterator, not resolved and not with a slave: waiting to be handed out."""
        return self.view().buffered()

    def finished_overall(self) -> int:
        return self.view().finished_overall()

    def resolved(self) -> int:
        return self.view().resolved()

    def _checkpoint(self, complete: bool = False) -> None:
        if not self.config.retry_failed:  # a replay writes no progress (only its counts, at its end)
            self.saver.save(self.ledger, self.total, complete)
            if self.saver.error is None:
                self.checkpointed_at = time.monotonic()

    def snapshot(self) -> dict[str, Any]:
        """The run as tm-status shows it."""
        return status.snapshot(self.view(), time.monotonic())

    # ------------------------------------------------------------ end

    def _close(self, reason: EndReason, now: float) -> None:
        """The run ended for `reason`: tell every slave to quit, and linger (see taskmaster.shutdown)."""
        self.duration = now - self.started  # the run, not the goodbyes after it
        self.ended = reason
        self.shutdown.close(now, self.started)
        for slave in self.registry.slaves.values():
            if slave.live and not slave.told_quit:
                self.registry.told_to_quit(slave)
                self.endpoint.send(slave.identity, protocol.quit_(self.shutdown.quit_reason()))

    def _finish(self) -> Outcome:
        """The last checkpoint, once the master lingered; the Outcome."""
        assert self.ended is not None
        complete = self.ended is EndReason.COMPLETE
        self._checkpoint(complete=complete)
        problem = self.disk_error or self.saver.error
        if self.config.retry_failed and complete:
            try:
                self.failed_jobs.finish_replay()
            except OSError as exc:
                problem = f"cannot rewrite the failures file {self.config.failures_path}: {exc.strerror or exc}"
            else:
                checkpoint.settle_replay(self.config.state_path, self.target, self.kwargs, self.ledger.finished)
        finished, failed = self.ledger.finished, self.ledger.failed
        tally = Tally(
            finished=finished,
            failed=failed,
            duration=self.duration,
            finished_overall=self.finished_overall(),
            any_failed=bool(self.resumed_from.failed + failed or self.failed_jobs.failed_again),
            bad_messages=self.bad_messages,
            refusals=self.endpoint.refusals,
            foreign_tokens=self.binding.refused,
        )
        detail = EndDetail(
            failures_path=self.config.failures_path,
            state_path=None if self.config.retry_failed else self.config.state_path,
            stop_signal=self.shutdown.stop_signal,
            halt_reason=self.control.halt_reason() if self.ended is EndReason.HALTED else None,
            source_error=self.source.error,
            source_crash=self.source.crash,
            unpicklable_error=self.source.unpicklable_error,
            problem=problem,
        )
        return build_outcome(self.ended, tally, detail)
