"""The slave's liveness thread: heartbeats and give-backs, from a real OS thread.

Greenlets only switch when the running one yields; a CPU-bound handler (a
plain Python loop) never does.  The GIL, though, is handed between OS threads
every few milliseconds whatever the code does, so a real thread with its own
(non-gevent) ZeroMQ socket keeps telling the master this slave is alive, and
answers the master's RECALL at once: it cuts jobs this slave has not started
off its queue (``give_back``) and says which, so that a slave that runs dry
gets them while this one is still busy with a long job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import zmq
from gevent import monkey

from taskmaster import protocol

# The unpatched primitives: with monkey patching on, `threading` and
# its lock would give us greenlets, which is exactly what must not happen.
_start_new_thread = monkey.get_original("_thread", "start_new_thread")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")

STEP_SECONDS = 0.05


class HeartbeatThread:
    def __init__(
        self,
        address: str,
        slave_id: str,
        secure: Callable[[Any], None] | None = None,
        watchdog: Callable[[], None] | None = None,
        give_back: Callable[[int, int | None], tuple[list, list]] | None = None,
        routing_id: bytes | None = None,
    ) -> None:
        self.address = address
        # Named by us, not by the master's ROUTER, so that the HELLO can tell
        # the master which connection is ours: its heartbeats and give-backs
        # count from that one only, also after a reconnect.
        self.routing_id = routing_id
        self.watchdog = watchdog  # called every step: looks for jobs past their timeout
        # Cuts up to N jobs not started off the queue, and batches up to an id when they arrive: (cuts, queue after).
        self.give_back = give_back
        self.slave_id = slave_id
        self.secure = secure  # applies transport security to the socket, if any
        self.run_id = ""
        self.token = ""
        self.interval = 10.0
        self.stopped = False
        self._finished = _allocate_lock()
        self._wake_read = self._wake_write = -1

    def start(self) -> None:
        self._finished.acquire()
        # stop() writes a byte here: the thread, waiting on its socket and this
        # pipe, ends at once rather than at the end of its step.
        self._wake_read, self._wake_write = os.pipe()
        _start_new_thread(self._loop, ())

    def stop(self, wait: float = 1.0) -> None:
        self.stopped = True
        if self._wake_write < 0:
            return  # never started
        os.write(self._wake_write, b"x")
        if self._finished.acquire(True, wait):
            self._finished.release()
            for fd in (self._wake_read, self._wake_write):
                os.close(fd)
            self._wake_read = self._wake_write = -1

    def _loop(self) -> None:
        context = zmq.Context()
        sock = context.socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 4)
            if self.address.startswith("tcp://["):
                sock.setsockopt(zmq.IPV6, 1)
            if self.secure is not None:
                self.secure(sock)
            if self.routing_id:
                sock.setsockopt(zmq.ROUTING_ID, self.routing_id)
            sock.connect(self.address)
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(self._wake_read, zmq.POLLIN)
            last_beat, beat_run = 0.0, ""
            while not self.stopped:
                now = time.monotonic()
                if self.run_id and (now - last_beat >= self.interval or beat_run != self.run_id):
                    # At once for a new run: the master learns where to send recalls.
                    last_beat, beat_run = now, self.run_id
                    self._send(sock, protocol.heartbeat(self.slave_id, self.run_id, self.token))
                if self.watchdog is not None:
                    self.watchdog()
                if sock in dict(poller.poll(STEP_SECONDS * 1000)):
                    self._answer(sock, sock.recv_multipart())
        finally:
            sock.close(0)
            context.term()
            self._finished.release()

    def _send(self, sock: Any, frames: list[bytes]) -> None:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # master unreachable: the request loop notices and reports it

    def _answer(self, sock: Any, frames: list[bytes]) -> None:
        """A RECALL from the master: give back what was asked for, if this slave has it."""
        try:
            kind, header, _ = protocol.decode_from_master(frames)
            want = int(header["want"]) if kind == protocol.RECALL else 0
            upto = header.get("upto")
            upto = int(upto) if upto is not None else None
        except (ValueError, KeyError, TypeError, protocol.ProtocolError):
            return
        if want > 0 and self.give_back is not None and self.run_id:
            # Answered also when there was nothing to give: the queue it
            # carries corrects the master's view of this slave.
            cuts, queue = self.give_back(want, upto)
            self._send(sock, protocol.give_back(self.slave_id, self.run_id, self.token, cuts, queue))
