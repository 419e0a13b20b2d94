"""The slave's request socket: a DEALER asking the master in the Lazy Pirate manner.

One request in flight at a time, an answer expected within ``--timeout``,
else the socket is closed, reopened and the same request sent again,
``--retries`` times in all before the slave gives up - or, with
``--wait-for-master``, for as long as that says (``Patience``, kept apart
from the request loop so that the loop only asks "again?").  The socket's
handshake is watched, so that a master that refuses this slave (secrets
differ) is reported as such rather than as a master that is down.

Kept apart from the slave's loop, as ``endpoint`` is from the master's: the
loop deals in messages, the transport details live here.  While a request
waits, the loop keeps working through its ``Waiter`` (the worker greenlets
run meanwhile; finished jobs go out in ACKs).
"""

from __future__ import annotations

import logging
import time
from typing import Any, NamedTuple, Protocol

import zmq.green as zmq

from taskmaster.wire import security

RECONNECT_FIRST_MS = 10
RECONNECT_MAX_MS = 1000
ACK_WHILE_WAITING = 0.001  # while a request waits for its answer and jobs run, look this often (seconds)
IDLE_POLL_MS = 100  # ... and this often when none runs

log = logging.getLogger("taskmaster.slave")


class Patience(NamedTuple):
    """How long a slave keeps trying to reach its master before it gives up.

    ``--retries`` tries of ``--timeout`` each, and ``--wait-for-master SECONDS``
    (0: for ever) for cluster engines, where slaves often come up long before
    their master or while it restarts.
    """

    address: str
    retries: int
    timeout_ms: int
    wait_for_master: float | None  # None: --retries tries only; 0: for ever
    quiet: bool = False  # waiting is expected (a slave of tm-run while its master starts): no line about it

    def try_again(self, attempt: int, first_try: float) -> bool:
        """Whether a request still without an answer after `attempt` tries is worth another."""
        if attempt < self.retries:
            return True
        if self.wait_for_master is None:
            return False
        return self.wait_for_master == 0 or time.monotonic() - first_try < self.wait_for_master

    def log_retry(self, attempt: int, why: str) -> None:
        """One warning per try by default; while waiting for a master on purpose, one line, then debug."""
        if self.wait_for_master is None:
            log.warning("master at %s: %s (try %d of %d); retrying", self.address, why, attempt, self.retries)
        elif attempt == 1 and not self.quiet:
            how_long = f"up to {self.wait_for_master:g}s" if self.wait_for_master else "for ever"
            log.info("master at %s: %s; waiting for it %s (--wait-for-master)", self.address, why, how_long)
        else:
            log.debug("master at %s: %s (try %d); retrying", self.address, why, attempt)

    def describe(self) -> str:
        """How long the slave tried, as its error message says it."""
        if self.wait_for_master:
            return f"within --wait-for-master {self.wait_for_master:g}s"
        return f"after {self.retries} tries of {self.timeout_ms} ms"


class Waiter(Protocol):
    """What the slave does while a request waits for its answer."""

    def working(self) -> bool:
        """Are jobs running or queued (then look at the socket often, to acknowledge them soon)?"""

    def while_waiting(self, kind: bytes) -> bool:
        """A moment passed without an answer to a `kind` request; True to give up asking."""

    def last_try(self) -> bool:
        """Is one try all a request gets (the slave is stopping)?"""


class LazyPirateClient:
    def __init__(
        self, address: str, secure: Any, patience: Patience, routing_prefix: str = "", hint: str = ""
    ) -> None:
        self.address = address
        self.secure = secure  # applies CURVE to a socket, if there is a secret
        self.hint = hint or security.mismatch_hint(None)  # what to do when the master refuses us
        self.patience = patience  # how long to keep trying: --timeout, --retries, --wait-for-master
        self.routing_prefix = routing_prefix  # our connections are named prefix.1, prefix.2... (the HELLO says so)
        self.connections = 0
        self.socket: Any = None
        self.monitor: Any = None
        self.handshake_failures = 0  # handshakes refused since the last one that succeeded
        self.round_trip = 0.0  # seconds from a request to its answer, recently

    def connect(self) -> None:
        """A new socket (dropping whatever was queued for the old peer)."""
        self.close()
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # A slave often starts beside its master: try again soon after a
        # refused connect, backing off to once a second while it stays away.
        sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_FIRST_MS)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_MAX_MS)
        if self.address.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        if self.secure is not None:
            self.secure(sock)
        if self.routing_prefix:
            # A fresh name for each connection (late answers to the one given up
            # are lost with it), under the prefix the HELLO told the master.
            self.connections += 1
            sock.setsockopt(zmq.ROUTING_ID, f"{self.routing_prefix}.{self.connections}".encode())
        self.monitor = sock.get_monitor_socket(security.MONITORED)
        sock.connect(self.address)
        self.socket = sock

    def close(self) -> None:
        if self.socket is not None:
            self.read_handshake_events()
            self.socket.disable_monitor()
            self.monitor.close(0)
            self.socket.close(0)
            self.socket = None

    def read_handshake_events(self) -> None:
        while True:
            try:
                event = security.monitor_event(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            if event & security.HANDSHAKE_FAILED:
                self.handshake_failures += 1
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.handshake_failures = 0

    def unreachable(self, what: str) -> str:
        """Why the master did not answer, as the user should hear it (`what` unless it refused us)."""
        if self.handshake_failures:
            return f"the master refused this slave: secrets differ (the master at {self.address}: {self.hint})"
        return what

    def ask(self, frames: list[bytes], waiter: Waiter) -> list[bytes] | None:
        """Send one request, Lazy Pirate style: the reply, or None if none came.

        While this waits, the worker greenlets keep running jobs.
        """
        timeout = self.patience.timeout_ms
        first_try = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            sent = time.monotonic()
            # Never block here: this loop keeps its own time, and a request
            # that cannot be queued now is a try without an answer.
            self.send(frames)
            # Count only the time spent waiting on the socket, at most one step
            # per poll: while a handler hogs the process, the master is not late.
            waited = 0.0
            while waited < timeout:
                started = time.monotonic()
                step = min(timeout, int(ACK_WHILE_WAITING * 1000) if waiter.working() else IDLE_POLL_MS)
                if self.socket.poll(step):
                    sample = time.monotonic() - sent
                    self.round_trip = sample if not self.round_trip else 0.8 * self.round_trip + 0.2 * sample
                    return self.socket.recv_multipart()
                waited += min(step, (time.monotonic() - started) * 1000)
                self.read_handshake_events()
                if waiter.while_waiting(frames[0]):
                    return None
            if waiter.last_try():
                return None  # stopping: one try is all a last report gets
            again = self.patience.try_again(attempt, first_try)
            if again:
                why = "it refused the handshake" if self.handshake_failures else f"no answer within {timeout} ms"
                self.patience.log_retry(attempt, why)
            self.connect()  # drop whatever is queued for the dead peer
            if not again:
                return None

    def send(self, frames: list[bytes]) -> bool:
        """Queue a message without waiting; False if it could not be queued now."""
        try:
            self.socket.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            return False

    def wait_for_answer(self, seconds: float) -> list[bytes] | None:
        """The next message from the master within `seconds` (for a message sent with `send`), or None."""
        if self.socket.poll(int(seconds * 1000)):
            return self.socket.recv_multipart()
        return None

    def unprompted(self) -> list[bytes] | None:
        """A message the master sent without being asked (QUIT), if one is waiting."""
        return self.wait_for_answer(0)
