"""Heartbeats from a real OS thread, so a busy handler cannot silence them.

Greenlets only switch when the running one yields; a CPU-bound handler (a
plain Python loop) never does.  The GIL, though, is handed between OS threads
every few milliseconds whatever the code does, so a real thread with its own
(non-gevent) ZeroMQ socket keeps telling the master this slave is alive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zmq
from gevent import monkey

from taskmaster import protocol

# The unpatched primitives: with monkey patching on, `threading` and
# `time.sleep` would give us greenlets, which is exactly what must not happen.
_start_new_thread = monkey.get_original("_thread", "start_new_thread")
_sleep = monkey.get_original("time", "sleep")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")

STEP_SECONDS = 0.05


class HeartbeatThread:
    def __init__(
        self,
        address: str,
        slave_id: str,
        secure: Callable[[Any], None] | None = None,
        watchdog: Callable[[], None] | None = None,
    ) -> None:
        self.address = address
        self.watchdog = watchdog  # called every step: looks for jobs past their timeout
        self.slave_id = slave_id
        self.secure = secure  # applies transport security to the socket, if any
        self.run_id = ""
        self.token = ""
        self.interval = 10.0
        self.stopped = False
        self._finished = _allocate_lock()

    def start(self) -> None:
        self._finished.acquire()
        _start_new_thread(self._loop, ())

    def stop(self, wait: float = 1.0) -> None:
        self.stopped = True
        if self._finished.acquire(True, wait):
            self._finished.release()

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
            sock.connect(self.address)
            waited = self.interval
            while not self.stopped:
                if waited >= self.interval and self.run_id:
                    waited = 0.0
                    try:
                        sock.send_multipart(protocol.heartbeat(self.slave_id, self.run_id, self.token), zmq.NOBLOCK)
                    except zmq.ZMQError:
                        pass  # master unreachable: the request loop notices and reports it
                if self.watchdog is not None:
                    self.watchdog()
                _sleep(STEP_SECONDS)
                waited += STEP_SECONDS
        finally:
            sock.close(0)
            context.term()
            self._finished.release()
