"""The master's process in the simulation: the real ``Master``, its filler, its loop, its crashes.

The loop is ``taskmaster.serving.serve``'s: the messages waiting on the
socket are handled in one burst, then the master ticks; with no message it
ticks every ``serving.poll_ms``.  The filler is the real
``JobSource.fill`` in a process of its own, whose
``room`` event and ``gevent.sleep(0)`` run on the simulated clock: it pulls
when the master makes room, at a simulated moment.  A stall holds the
master's messages and ticks until it ends; a crash loses the master's memory
and whatever was on its way to it, and a new ``Master`` resumes from the
state file the old one wrote (``prepare``), as the same command run again
would.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

from taskmaster.config import MasterConfig
from taskmaster.master import process as serving
from taskmaster.master.core import Master
from taskmaster.master.endpoint import RECEIVE_BURST
from taskmaster.master.outcome import Outcome
from taskmaster.master.shutdown import Phase
from taskmaster.wire import protocol

from .scheduler import Sim, SimEvent

TARGET = "sim:get_jobs"


class SimEndpoint:
    """The master's ROUTER socket: its sends go out on the simulated network."""

    def __init__(self, host: MasterHost) -> None:
        self.host = host
        self.keys = None
        self.refusals = 0

    def bind(self) -> None:
        pass

    def close(self) -> None:
        pass

    def receive(self, timeout_ms: int) -> list[list[bytes]]:
        return []

    def send(self, identity: bytes, frames: list[bytes]) -> None:
        self.host.sent(identity, frames)


class MasterHost:
    def __init__(self, world: Any) -> None:
        self.world = world
        self.sim: Sim = world.sim
        self.m: Master | None = None
        self.epoch = 0  # one per master process: what was on its way to a dead one is lost
        self.stalled_until = 0.0
        self.tick_token = 0
        self.filler: Any = None
        self.inbox: deque[tuple[bytes, list[bytes]]] = deque()  # arrived, not yet taken by the loop
        self.boots = 0

    # ------------------------------------------------------------- lifecycle

    def boot(self, config: MasterConfig) -> None:
        """Start a master process (the same command as before: it resumes from the state file)."""
        self.epoch += 1
        self.boots += 1
        m = Master(self.world.jobs.get_jobs, TARGET, {}, config, endpoint=SimEndpoint(self))
        early = m.prepare()
        self.world.trace(f"master boot {self.boots}: {'over' if early else 'running'}")
        if self.boots > 1:
            self.world.seen["master resumed"] += 1
        if early is not None:
            m.failed_jobs.file.close()
            self.world.master_ended(early, m)
            return
        m.start(self.sim.now)
        m.source.room = SimEvent(self.sim)
        self.m = m
        self.filler = self.sim.spawn(m.source.fill)
        self.world.master_booted(m)
        self._tick(self.epoch)

    def crash(self) -> None:
        """SIGKILL: nothing but its files survives."""
        if self.m is None:
            return
        self.world.trace("master crash")
        self._down()

    def stop(self) -> None:
        """The simulation is over: the process goes, as it would at a crash (and its filler with it)."""
        if self.m is not None:
            self._down()

    def _down(self) -> None:
        assert self.m is not None
        self.m.failed_jobs.file.close()
        self.sim.kill(self.filler)
        self.m = None
        self.epoch += 1
        self.inbox.clear()

    def stall(self, seconds: float) -> None:
        if self.m is not None:
            self.world.trace(f"master stalls {seconds:.3f}s")
            self.stalled_until = max(self.stalled_until, self.sim.now + seconds)

    def run_filler(self) -> None:
        """The master's gevent.sleep(0): the filler, if the master made it room, pulls now."""
        waiter = self.sim.waiting.get(self.filler)
        if self.m is not None and self.m.source.room.is_set() and waiter is not None and not waiter.fired:
            waiter.wake(True)

    # ----------------------------------------------------------------- loop

    def deliver(self, epoch: int, identity: bytes, frames: list[bytes]) -> None:
        """A message reaches the master's socket; its loop takes it with the others waiting there."""
        if self.m is None or epoch != self.epoch:
            return  # sent to a master that died: lost with its connections
        self.inbox.append((identity, frames))
        if len(self.inbox) == 1:
            self.sim.at(max(self.sim.now, self.stalled_until), self._serve, epoch)

    def _serve(self, epoch: int) -> None:
        """One turn of serving.serve: every message waiting (a burst, at most RECEIVE_BURST), then a tick."""
        if epoch != self.epoch or self.m is None or not self.inbox:
            return
        if self.sim.now < self.stalled_until:
            self.sim.at(self.stalled_until, self._serve, epoch)
            return
        m = self.m
        for _ in range(min(len(self.inbox), RECEIVE_BURST)):
            identity, frames = self.inbox.popleft()
            self.world.trace_message(identity.decode(), "m", frames)
            m.handle([identity, *frames], self.sim.now)
            if not m.pace.paused:
                self.world.pause_answered = None  # resumed (a pause later in the burst is a new one)
        if self.inbox:
            self.sim.soon(self._serve, epoch)
        self._tick(epoch)

    def _timer(self, epoch: int, token: int) -> None:
        if epoch != self.epoch or token != self.tick_token or self.m is None:
            return
        if self.sim.now < self.stalled_until:
            self.sim.at(self.stalled_until, self._timer, epoch, token)
        elif self.inbox:
            self._serve(epoch)  # the poll returns with what waits: handled before the tick
        else:
            self._tick(epoch)

    def _tick(self, epoch: int) -> None:
        m = self.m
        assert m is not None
        if m.dispatcher.parked and m.phase is Phase.CLOSING:
            self.world.seen["parked at the end"] += 1
        outcome = m.tick(self.sim.now)
        self.world.after_master_step(m)
        if outcome is not None:
            self._ended(outcome)
            return
        if self.m is m and epoch == self.epoch:
            self.tick_token += 1
            self.sim.at(self.sim.now + serving.poll_ms(m) / 1000, self._timer, epoch, self.tick_token)

    def _ended(self, outcome: Outcome) -> None:
        m = self.m
        assert m is not None
        self.world.trace(f"master ended: {m.ended} (code {outcome.code})")
        self._down()
        self.world.master_ended(outcome, m)

    # ------------------------------------------------------------ sending

    def sent(self, identity: bytes, frames: list[bytes]) -> None:
        """A message the master sends: traced, watched (pause answers), and on its way."""
        if frames[0] == protocol.CONTROL:
            answer = json.loads(frames[1])
            self.world.trace(f"m>{identity.decode()} CONTROL {answer.get('command')} {answer.get('error', '')}")
            self.world.control_answered(answer)
        else:
            self.world.trace_message("m", identity.decode(), frames)
        self.world.net.to_slave(identity, frames)
