"""Live control of a running master: tm-ctl's pause, resume, rate and stop; --max-failures.

The master hands each CONTROL message to ``Controls.handle`` and tells it
of a few events (a slave's news while paused, failed jobs, the passing of
time); the live settings themselves - paused, the rate limit, halted - are
the ``Pace``, which ``Controls`` changes and the hand-out path reads.
``Controls`` recalls slaves and refuses commands through the endpoint's
send; what is the master's to do - stop the run, answer tm-ctl with the
run's state - it returns (``Due``), calling nothing above it.

Pausing means that no job starts anywhere after tm-ctl's answer, not only
that no job is handed out: slaves hold jobs they have not started, so each
is recalled (asked to give back every job it has not started, which its
liveness thread does at once, under its workers' claim lock - and a batch
still on its way, as it arrives).  A --max-failures halt recalls the same way.  The answer
waits until every slave is *settled* - known to hold no job it has not
started, and to have read the master's last answer - or until half of
tm-ctl's timeout has passed; then it says how many were not settled.
Running jobs finish; slaves keep asking for jobs and are told there are none,
and keep heartbeating, so their leases hold however long the pause lasts.

Control needs the same right as taking jobs: with a secret, only its holders
get through CURVE.  A master reachable from other hosts without a secret
refuses control commands: anyone could pause or stop the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from taskmaster.logformat import now_and_then
from taskmaster.wire import protocol, security

if TYPE_CHECKING:
    from taskmaster.config import MasterConfig
    from taskmaster.master.endpoint import Send
    from taskmaster.master.ledger import Ledger
    from taskmaster.master.pace import Pace
    from taskmaster.master.registry import SlaveRecord, SlaveRegistry
    from taskmaster.master.shutdown import Shutdown

log = logging.getLogger("taskmaster.master")

PAUSE_SETTLE_SECONDS = 2.0  # a pause is answered within this long at most (and half the asker's timeout)
RECALL_AGAIN_SECONDS = 0.05  # while paused, a slave still holding unstarted jobs is asked again this often


class PendingPause(NamedTuple):
    identity: bytes  # tm-ctl's socket
    deadline: float  # answer by then, settled or not


class Reply(NamedTuple):
    """tm-ctl sockets to answer with the run's state after `command` (``state_reply``)."""

    identities: list[bytes]
    command: str
    unsettled: int = 0  # slaves that did not give back their unstarted jobs in time (a pause)


@dataclass
class Due:
    """What a command or an event leaves to the master: stop the run, answer tm-ctl."""

    stop: bool = False  # stop as SIGTERM would (tm-ctl stop, a --max-failures halt)
    replies: list[Reply] = field(default_factory=list)  # after the stop, if any: the answers say "stopping"


class Controls:
    """tm-ctl's commands and --max-failures, applied to the pace; the slaves recalled through `send`.

    It reads the ledger (the failures, for --max-failures), the registry (the
    slaves to recall and whether they settled) and the shutdown (whether the
    run still runs); it changes the pace only.
    """

    def __init__(
        self,
        config: MasterConfig,
        secure: bool,
        pace: Pace,
        ledger: Ledger,
        registry: SlaveRegistry,
        shutdown: Shutdown,
        send: Send,
    ) -> None:
        self.config = config
        self.secure = secure  # the master has a secret: only its holders get through
        self.pace = pace
        self.ledger = ledger
        self.registry = registry
        self.shutdown = shutdown
        self.send = send
        self.pending: list[PendingPause] = []  # pause commands waiting for the slaves to settle
        self.refused = 0  # control commands refused (logged at the 1st, 10th, 100th...: no flood)

    # ------------------------------------------------------- commands

    def refusal(self) -> str | None:
        """Why control commands are refused on this master, if they are."""
        address = self.config.address
        if not self.secure and not security.is_loopback(address):
            return (
                f"this master listens on {address}, reachable from other hosts, without a secret: it "
                "refuses control commands, or anyone who can reach it could pause or stop the run. Restart it "
                "with --secret-file PATH (create one with tm-master --new-secret PATH) and pass the same file "
                "to tm-ctl, or listen on a loopback address"
            )
        return None

    def handle(self, identity: bytes, request: protocol.ControlRequest, now: float) -> Due:
        """Apply a command from tm-ctl at `identity`; a refused one is answered here, the others are Due."""
        refusal = self.refusal()
        if refusal is not None:
            self.refused += 1
            if now_and_then(self.refused):
                log.warning(
                    "refused a control command (%d so far): no --secret-file on a non-loopback address", self.refused
                )
            self.send(identity, protocol.control_reply({"ok": False, "error": refusal}))
            return Due()
        if request.command not in protocol.CONTROL_COMMANDS:  # the wire refuses those; a caller in code may not
            error = f"unknown command {request.command!r} ({', '.join(protocol.CONTROL_COMMANDS)})"
            self.send(identity, protocol.control_reply({"ok": False, "error": error}))
            return Due()
        if request.command == "pause":
            self.pause(now)
            wait = min(PAUSE_SETTLE_SECONDS, request.timeout_ms / 2000)
            self.pending.append(PendingPause(identity, now + wait))
            return self.answer_settled(now)
        stop = False
        if request.command == "resume":
            if self.pace.resume():
                log.warning("resumed (tm-ctl)")
        elif request.command == "rate":
            self.set_rate(request.rate, now)
        elif request.command == "stop":
            log.warning("asked to stop (tm-ctl), as by SIGTERM")
            stop = True
        return Due(stop=stop, replies=[Reply([identity], request.command)])

    def pause(self, now: float) -> None:
        if self.pace.pause():
            log.warning("paused (tm-ctl): no job starts until tm-ctl resume; the jobs running finish")
        for slave in self.registry.slaves.values():
            self._recall_all(slave, now, force=True)

    def set_rate(self, rate: float | None, now: float) -> None:
        """The rate limit from now on: `rate` jobs a second, or none."""
        self.pace.set_rate(rate, now)
        log.warning("rate limit (tm-ctl): %s", f"{rate:g} jobs/s" if rate else "none")

    # ------------------------------------------------- pause, settling

    def _recall_all(self, slave: SlaveRecord, now: float, force: bool = False) -> None:
        """Ask `slave` for every job it holds and has not started."""
        if not slave.live or slave.beat_identity is None:
            return
        if not force and now - slave.recalled_at < RECALL_AGAIN_SECONDS:
            return
        self.registry.recalled(slave, now)
        # Every batch handed out so far, also one still on its way to the slave.
        upto = self.registry.next_batch
        self.send(slave.beat_identity, protocol.recall(protocol.MAX_WANT, upto))

    def settled(self, slave: SlaveRecord) -> bool:
        """Is `slave` known to hold no job it has not started (so none will start there)?"""
        registry = self.registry
        if registry.unstarted(slave):
            return False
        # A batch the master forgot because its jobs were all resolved elsewhere
        # (handed out twice: a lease ran out) still starts on the slave holding
        # it, unless that slave gives it back: it counts until the slave says so.
        if any(end > start and batch_id not in slave.batches for batch_id, start, end in slave.queue):
            return False
        if slave.last_batch is None:
            return True  # its last request was answered without jobs: nothing on the way
        # The last answer carried jobs, and no request since says the slave
        # read it: they may be on their way still, unless it cut that batch.
        batch = slave.batches.get(slave.last_batch)
        if batch is None:
            return False  # forgotten, resolved elsewhere: it may still start there, until a request says not
        return batch.expired or batch.keep < batch.size

    def recall_again(self, now: float) -> None:
        """While paused or halted: ask again each slave last known to hold jobs it has not started.

        For a RECALL or its GIVEBACK that was lost, or a slave with nothing
        to report (slaves are asked again when they report, too).  Not a
        slave merely unsettled: the RECALL it answered covers the batches
        on their way to it, and asking it ten times a second for as long
        as its jobs run would only cost messages.
        """
        registry = self.registry
        for slave in registry.slaves.values():
            if slave.live and registry.unstarted(slave):
                self._recall_all(slave, now)

    def on_news(self, slave: SlaveRecord, now: float) -> Due:
        """While paused or halted: `slave` reported (a request or a give-back); recall again, answer pauses."""
        if not self.settled(slave):
            self._recall_all(slave, now)
        return self.answer_settled(now) if self.pending else Due()

    def answer_settled(self, now: float) -> Due:
        """The pause commands to answer now: those whose slaves all settled, or whose time is up."""
        unsettled = [s for s in self.registry.slaves.values() if s.live and not self.settled(s)]
        due = [p for p in self.pending if not unsettled or now >= p.deadline]
        if not due:
            return Due()
        self.pending = [p for p in self.pending if p not in due]
        if unsettled:
            log.warning(
                "pause: %d slaves did not give back their unstarted jobs in time; those jobs may still start",
                len(unsettled),
            )
        return Due(replies=[Reply([p.identity for p in due], "pause", len(unsettled))])

    # ------------------------------------------------- --max-failures

    def check_failures(self, now: float) -> Due:
        """Halt the run once more jobs failed for good than --max-failures allows: the run stops, if it runs."""
        limit = self.config.max_failures
        if limit is None or self.pace.halted is not None:
            return Due()
        failed = self.ledger.failed
        resolved = self.ledger.finished + failed
        if not limit.exceeded(failed, resolved):
            return Due()
        reason = limit.describe(failed, resolved)
        self.pace.halt(reason)
        log.error("halting: %s; no new jobs, waiting up to %gs for the jobs running", reason, self.config.grace)
        # Jobs handed out and not started would go on failing: take them back.
        for slave in self.registry.slaves.values():
            self._recall_all(slave, now, force=True)
        return Due(stop=self.shutdown.running)

    def halt_reason(self) -> str:
        """Why the run halted, with the counts at its end (the jobs in flight then finished too)."""
        assert self.config.max_failures is not None
        failed = self.ledger.failed
        return self.config.max_failures.describe(failed, self.ledger.finished + failed)


def state_reply(snap: dict[str, Any], command: str, unsettled: int, stopping: bool) -> dict[str, Any]:
    """The state after `command`, for tm-ctl: the status snapshot `snap` without its slave rows."""
    answer = {key: value for key, value in snap.items() if key != "slaves"}
    answer.update(ok=True, command=command, unsettled_slaves=unsettled, stopping=stopping)
    return answer


def describe(answer: dict[str, Any]) -> str:
    """tm-ctl's answer as one line a person reads."""
    command = answer.get("command", "")
    if answer.get("state") == "finished":
        head = "the run is over"
    elif answer.get("halted"):
        head = f"halting ({answer['halted']}): waiting for the {answer['in_flight']} jobs in flight"
    elif command == "stop" or answer.get("stopping"):
        head = f"stopping: waiting for the {answer['in_flight']} jobs in flight, then checkpoint and exit"
    elif answer.get("paused"):
        head = f"paused: no new job starts; the {answer['in_flight']} jobs in flight finish (tm-ctl resume to go on)"
        if answer.get("unsettled_slaves"):
            head += (
                f"; {answer['unsettled_slaves']} slaves did not give back their unstarted jobs in time, "
                "those may still start"
            )
    else:
        head = "running"
    rate = answer.get("rate_limit")
    limit = answer.get("max_failures")
    return (
        f"{head} | rate limit {f'{rate:g} jobs/s' if rate else 'none'} | "
        f"halt after {f'more than {limit} failed' if limit else 'never'} | "
        f"{answer['finished']} finished, {answer['failed']} failed, {answer['in_flight']} in flight"
    )
