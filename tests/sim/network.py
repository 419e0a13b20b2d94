"""The simulated network between the slaves and the master: ZeroMQ's delivery, and its faults.

Connections are named as ZeroMQ routing ids are (``req-s1.3``, ``beat-s1``,
``ctl-2``).  What ZeroMQ over TCP does, the network does: messages on one
connection arrive in order; an answer to a connection its slave closed is
lost; a message already in the wire when its sender gave the connection up
still arrives.  The faults are what a real network and real processes add:
a message lost, a slave's heartbeat, ACK or GIVEBACK delivered twice
(never a request, nor an answer: see ``to_master``), delays that let
a newer connection overtake an older one, links cut and healed, and a
master that stalls (its messages wait for it) or crashes (what was on its
way to it is lost).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from taskmaster.wire import protocol

from .scheduler import Sim, SimEvent

ANSWERED = (protocol.HELLO, protocol.REQUEST, protocol.BYE, protocol.CONTROL, protocol.STATUS)


class Faults:
    """The network's misbehaviour; all zero once the world's faults stop."""

    def __init__(self) -> None:
        self.drop = 0.0
        self.duplicate = 0.0
        self.delay = 0.002  # the latency of a message: base ...
        self.jitter = 0.0  # ... plus up to this much more, at random
        self.long_delay = 0.0  # the chance of a delay of up to `long_delay_seconds`
        self.long_delay_seconds = 0.0
        self.cut: set[str] = set()  # hosts whose links are cut
        self.isolated = False  # the master's host is cut off from every slave (not by calm(): it heals in its time)

    def calm(self) -> None:
        self.drop = self.duplicate = self.jitter = self.long_delay = 0.0
        self.cut.clear()


class SimSocket:
    """One end of a connection on a slave's (or tm-ctl's) side: what LazyPirateClient uses of a zmq socket."""

    def __init__(self, net: Network, identity: bytes, host: str) -> None:
        self.net = net
        self.identity = identity
        self.host = host
        self.inbox: deque[list[bytes]] = deque()
        self.arrived = SimEvent(net.sim)
        self.open = True

    def send_multipart(self, frames: list[bytes], flags: int = 0) -> None:
        self.net.to_master(self, frames)

    def poll(self, timeout_ms: float) -> bool:
        if not self.inbox and timeout_ms > 0:
            self.arrived.clear()
            self.arrived.wait(timeout_ms / 1000)
        return bool(self.inbox)

    def recv_multipart(self) -> list[bytes]:
        return self.inbox.popleft()

    def deliver(self, frames: list[bytes]) -> None:
        self.inbox.append(frames)
        self.arrived.set()


class Network:
    def __init__(self, sim: Sim, rng: Any, trace: Callable[[str], None]) -> None:
        self.sim = sim
        self.rng = rng
        self.trace = trace
        self.faults = Faults()
        self.sockets: dict[bytes, SimSocket] = {}
        self.last_arrival: dict[tuple[bytes, str], float] = {}  # FIFO per connection and direction
        self.master: Any = None  # the world's master host: .deliver(identity, frames), .epoch
        self.sent = 0

    # ---------------------------------------------------------- connections

    def open(self, sock: SimSocket) -> None:
        self.sockets[sock.identity] = sock

    def close(self, sock: SimSocket) -> None:
        sock.open = False
        if self.sockets.get(sock.identity) is sock:
            del self.sockets[sock.identity]

    # -------------------------------------------------------------- sending

    def _arrival(self, key: tuple[bytes, str]) -> float:
        f, rng = self.faults, self.rng
        delay = f.delay + (rng.random() * f.jitter if f.jitter else 0.0)
        if f.long_delay and rng.random() < f.long_delay:
            delay += rng.random() * f.long_delay_seconds
        at = max(self.sim.now + delay, self.last_arrival.get(key, 0.0))
        self.last_arrival[key] = at
        return at

    def _lost(self, host: str) -> bool:
        if self.faults.isolated and host != "ctl":
            return True
        return host in self.faults.cut or (self.faults.drop > 0 and self.rng.random() < self.faults.drop)

    def to_master(self, sock: SimSocket, frames: list[bytes]) -> None:
        self.sent += 1
        if self._lost(sock.host):
            self.trace(f"drop {sock.identity.decode()}>m {frames[0].decode()}")
            return
        # Only messages that get no answer are duplicated: two answers on one
        # connection would shift every later answer by one, which no real
        # socket does (a request comes twice only as a Lazy Pirate retry,
        # on a new connection - the real client's doing, not the network's).
        twice = frames[0] not in ANSWERED and self.faults.duplicate and self.rng.random() < self.faults.duplicate
        copies = 2 if twice else 1
        epoch = self.master.epoch
        for _ in range(copies):
            self.sim.at(self._arrival((sock.identity, "up")), self.master.deliver, epoch, sock.identity, frames)

    def to_slave(self, identity: bytes, frames: list[bytes]) -> None:
        self.sent += 1
        sock = self.sockets.get(identity)
        if sock is None:
            return  # ZeroMQ's ROUTER drops what it cannot route
        if self._lost(sock.host):
            self.trace(f"drop m>{identity.decode()} {frames[0].decode()}")
            return
        self.sim.at(self._arrival((identity, "down")), self._arrive, sock, frames)

    def _arrive(self, sock: SimSocket, frames: list[bytes]) -> None:
        if sock.open:
            sock.deliver(frames)
