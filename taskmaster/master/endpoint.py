"""The master's socket: a ROUTER, with CURVE, ZAP and a handshake monitor when secured.

Kept apart from the master's loop so that the loop deals in messages and
the transport details (bind errors, authentication, refusals) live here.
"""

from __future__ import annotations

import logging
import os
import socket as stdlib_socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import zmq.green as zmq

from taskmaster.errors import UsageError
from taskmaster.master import connections
from taskmaster.wire import protocol, security
from taskmaster.wire.security import CurveKeys

log = logging.getLogger("taskmaster.master")

RECEIVE_BURST = 512  # messages taken per poll before the loop does anything else
# Send errors that only mean this one reply is lost: the peer is gone
# (EHOSTUNREACH, under ROUTER_MANDATORY) or its queue is full (EAGAIN).
PEER_ERRORS = frozenset({zmq.EAGAIN, zmq.EHOSTUNREACH})
CONNECTION_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED

Send = Callable[[bytes, list[bytes]], None]  # a message to the peer with that routing id (a Transport's send)


def _ipc_in_use(path: str) -> bool:
    """Is another process listening on this ipc:// path?

    ZeroMQ silently replaces the socket file of an ipc:// endpoint, which
    would steal the address from a running master; a test connection tells.
    """
    if not os.path.exists(path):
        return False
    probe = stdlib_socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        return True
    except OSError:
        return False  # a stale file from a master that died: safe to take over
    finally:
        probe.close()


class Transport(Protocol):
    """What the master needs of its socket (``MasterEndpoint``; an in-memory one in unit tests)."""

    keys: CurveKeys | None
    refusals: int  # connections refused (secrets differ), for the summary

    def bind(self) -> None: ...

    def close(self) -> None: ...

    def receive(self, timeout_ms: int) -> list[list[bytes]]: ...

    def send(self, identity: bytes, frames: list[bytes]) -> None: ...


class MasterEndpoint:
    def __init__(self, address: str, keys: CurveKeys | None) -> None:
        self.address = address
        self.keys = keys
        self.refusals = 0
        self.socket: Any = None
        self.zap: Any = None
        self.monitor: Any = None
        self.poller = zmq.Poller()
        self.admission: connections.Admission | None = None

    def bind(self) -> None:
        """Listen on the address; UsageError (one line) if that is impossible."""
        fd_limit = connections.raise_fd_limit()
        context = zmq.Context.instance()
        sock = context.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        # A connection that says nothing is dropped after this, not after libzmq's 30 s.
        sock.setsockopt(zmq.HANDSHAKE_IVL, connections.HANDSHAKE_MS)
        sock.setsockopt(zmq.MAXMSGSIZE, protocol.MAX_INBOUND_BYTES + 4096)
        # A slave names its connections and keeps the names when it reconnects
        # (its token is honoured on those only): the new connection takes over
        # the name from the old one, which may not have noticed it is gone.
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.address.startswith("tcp://["):
            sock.setsockopt(zmq.IPV6, 1)
        self.socket = sock
        if self.keys is not None:
            # ZAP: libzmq asks this socket whether each connecting peer may in.
            self.zap = context.socket(zmq.REP)
            self.zap.setsockopt(zmq.LINGER, 0)
            self.zap.bind(security.ZAP_ENDPOINT)
            self.poller.register(self.zap, zmq.POLLIN)
            self.keys.secure_server(sock)
        # Refusals: only what a wrong or missing secret causes (a peer that merely
        # hangs up mid-handshake, a port probe, is no refusal); and every
        # connection's coming and going, for the admission's books.
        self.monitor = sock.get_monitor_socket(security.REFUSED | CONNECTION_EVENTS)
        self.poller.register(self.monitor, zmq.POLLIN)
        try:
            if self.address.startswith("ipc://") and _ipc_in_use(self.address[len("ipc://") :]):
                raise zmq.ZMQError(zmq.EADDRINUSE)
            self._listen(self.address)
        except zmq.ZMQError as exc:
            self.close()
            if exc.errno == zmq.EADDRINUSE:
                raise UsageError(
                    f"address {self.address} is already in use: stop the master running there, "
                    "or pass another --address"
                ) from None
            raise UsageError(f"cannot listen on {self.address}: {exc}; pass --address tcp://HOST:PORT") from None
        self.poller.register(sock, zmq.POLLIN)
        self.admission = connections.Admission(fd_limit, connections.open_fds())
        if self.keys is None and not security.is_loopback(self.address):
            log.warning("%s", security.exposure_warning(self.address))
        elif self.keys is not None and self.keys.origin == security.DEFAULT and not security.is_loopback(self.address):
            log.info(
                "using this user's default secret of this host: slaves on other hosts need --secret-file "
                "(the same file passed to every command)"
            )

    def _listen(self, address: str) -> None:
        """Bind the socket; an ipc:// socket file is created 0600.

        The umask is set around bind, in this thread, where libzmq creates the
        file: it never exists with a wider mode, so no other user can connect
        in between (a chmod after bind alone would leave that moment open).
        """
        path = address[len("ipc://") :] if address.startswith("ipc://") and not address.startswith("ipc://@") else None
        if path is None:
            self.socket.bind(address)
            return
        old = os.umask(0o077)
        try:
            self.socket.bind(address)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)  # no execute bit either: a socket needs only read and write

    def close(self) -> None:
        if self.socket is None:
            return
        if self.monitor is not None:
            self.socket.disable_monitor()
            self.monitor.close(0)
        if self.zap is not None:
            self.zap.close(0)
        self.socket.close(0)
        self.socket = None

    def receive(self, timeout_ms: int) -> list[list[bytes]]:
        """Messages that arrived within `timeout_ms` (identity frame first)."""
        ready = dict(self.poller.poll(timeout_ms))
        if self.zap is not None and self.zap in ready:
            self._authenticate()
        if self.monitor is not None and self.monitor in ready:
            self._read_monitor()
        messages: list[list[bytes]] = []
        if self.socket in ready:
            for _ in range(RECEIVE_BURST):
                try:
                    messages.append(self.socket.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
        return messages

    def send(self, identity: bytes, frames: list[bytes]) -> None:
        try:
            self.socket.send_multipart([identity, *frames], zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            # The peer is gone or not keeping up: it will ask again.  Anything
            # else (a closed socket, a terminated context) is a bug to surface.
            if exc.errno not in PEER_ERRORS:
                raise

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

    def _read_monitor(self) -> None:
        """Count refusals, keep the admission's books, then let it act on them."""
        books = self.admission
        assert books is not None  # the monitor exists once bound
        now = time.monotonic()
        while True:
            try:
                event, value = security.monitor_event_value(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                break
            if event == zmq.EVENT_ACCEPTED:
                books.accepted(value, now)
            elif event & (zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED):
                books.closed(value)
            elif event & security.REFUSED:
                self._note_refusal()
        books.check(now)

    def _note_refusal(self) -> None:
        self.refusals += 1
        if self.refusals in (1, 100) or self.refusals % 10000 == 0:
            log.warning(
                "refused a connection (%d so far): the peer's secret differs or it has none; every "
                "command needs the master's secret (the same --secret-file; the default secret is per user "
                "and host, so a slave on another host needs --secret-file)",
                self.refusals,
            )
