"""Connections that have not proven the secret yet: bounded in time and in number.

Nothing is authenticated before a connection's handshake, so idle
connections (a port scan, a flood of them from a local user) could hold
every file descriptor of the master: libzmq then spins on accept, tm-status
gets no answer and the checkpoint cannot open its file.  Three defences:

* the soft RLIMIT_NOFILE is raised to the hard limit at start (``raise_fd_limit``);
* a handshake must end within HANDSHAKE_MS (ZMQ_HANDSHAKE_IVL): a silent
  connection is dropped then, not after libzmq's 30 s;
* ``Admission`` keeps the books of the socket's connections from its
  monitor events (ACCEPTED and DISCONNECTED carry the connection's file
  descriptor).  When they reach its budget (half the descriptors left once
  the master is up), it sheds the connections that have not proven anything,
  oldest first, by shutting their sockets down (libzmq sees the end of the
  stream and closes them itself), down to half the budget.

Proven means: the peer has sent more bytes than a ZMTP greeting and a CURVE
HELLO (TCP_INFO's tcpi_bytes_received), which takes the master's public key,
derived from the secret; a real client does so within milliseconds of
connecting, so tm-status gets through a flood of idle connections.  libzmq's
handshake events carry no descriptor, so they cannot say which connection
authenticated.  Over ipc:// (0600 socket: only the user) a connection's age
stands in: one older than HANDSHAKE_MS is past its handshake.

Not stopping to listen: zmq_unbind would also close every connection
accepted on the endpoint, slaves included.  A descriptor is shut down only
when the monitor's events, all read just before, say it is a connection still
open; the socket call fails harmlessly if the number has become something else.
"""

from __future__ import annotations

import logging
import os
import resource
import socket as stdlib_socket
import struct

from taskmaster.logformat import now_and_then

log = logging.getLogger("taskmaster.master")

HANDSHAKE_MS = 5000  # a connection's handshake must end within this (libzmq's default: 30 s)
RESERVE_FDS = 48  # at least this many kept for the master's own files (checkpoint, failures file, logs)
LOW_WATER = 0.5  # shed down to this share of the budget
PROVEN_BYTES = 264  # a ZMTP greeting (64) and a CURVE HELLO (200): past these, the peer knows the master's key
TCP_INFO_BYTES_RECEIVED = struct.Struct("=Q")  # struct tcp_info's tcpi_bytes_received, at offset 128 (Linux >= 4.6)
TCP_INFO_OFFSET = 128


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    # An infinite hard limit may be above what the kernel allows (nr_open): then a million.
    for target in (hard, 1 << 20):
        if target == resource.RLIM_INFINITY or target <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            return target
        except (ValueError, OSError):
            continue
    return soft


def open_fds() -> int:
    """How many descriptors this process has open (an estimate off Linux)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir used
    except OSError:
        return 32


class Admission:
    """The books of one listening socket's connections, and the shedding of unproven ones."""

    def __init__(self, fd_limit: int, fds_in_use: int) -> None:
        # What the connections may use: half of what is left once the process
        # is up, so that libzmq, accepting on its own thread faster than the
        # master reads the events, overshoots into the other half first.
        room = max(16, fd_limit - fds_in_use)
        self.fd_limit = fd_limit
        self.budget = max(8, min(room - RESERVE_FDS, room // 2))
        self.connections: dict[int, float] = {}  # fd -> when accepted (monotonic), oldest first
        self.shed = 0  # unproven connections shut down
        self.floods = 0  # times the budget was reached

    def accepted(self, fd: int, now: float) -> None:
        self.connections.pop(fd, None)  # a reused number: the old connection is gone
        self.connections[fd] = now

    def closed(self, fd: int) -> None:
        self.connections.pop(fd, None)

    def check(self, now: float) -> None:
        """After the monitor's events are read: shed unproven connections if there are too many."""
        if len(self.connections) < self.budget:
            return
        self.floods += 1
        if now_and_then(self.floods):
            log.warning(
                "%d connections open, the most this master takes (open files limit %d): dropping those that "
                "have not shown the secret (%d times so far)",
                len(self.connections),
                self.fd_limit,
                self.floods,
            )
        goal = int(self.budget * LOW_WATER)
        young_after = now - HANDSHAKE_MS / 1000
        for fd, accepted_at in list(self.connections.items()):
            if len(self.connections) <= goal:
                return
            received = bytes_received(fd)
            if received is None:
                proven = accepted_at < young_after  # not TCP (ipc): past its handshake if still there
            else:
                proven = received > PROVEN_BYTES
            if proven:
                continue
            del self.connections[fd]
            self.shed += 1
            shut_down(fd)


def _borrow(fd: int) -> stdlib_socket.socket | None:
    """A socket object for descriptor `fd` that libzmq owns (detach it, never close it); None if not a socket."""
    try:
        return stdlib_socket.socket(fileno=fd)
    except OSError:
        return None


def bytes_received(fd: int) -> int | None:
    """How many bytes the TCP peer on `fd` has sent so far; None for another kind of socket."""
    sock = _borrow(fd)
    if sock is None:
        return None
    try:
        if sock.family not in (stdlib_socket.AF_INET, stdlib_socket.AF_INET6):
            return None
        info = sock.getsockopt(stdlib_socket.IPPROTO_TCP, stdlib_socket.TCP_INFO, 256)
        if len(info) < TCP_INFO_OFFSET + TCP_INFO_BYTES_RECEIVED.size:
            return None  # an older kernel: judge by age
        return TCP_INFO_BYTES_RECEIVED.unpack_from(info, TCP_INFO_OFFSET)[0]
    except OSError:
        return None
    finally:
        sock.detach()


def shut_down(fd: int) -> None:
    """End the connection on descriptor `fd` without closing the descriptor (libzmq owns it)."""
    sock = _borrow(fd)
    if sock is None:
        return
    try:
        sock.shutdown(stdlib_socket.SHUT_RDWR)
    except OSError:
        pass  # already ended
    finally:
        sock.detach()
