"""The slave's liveness thread: heartbeats and give-backs, from a real OS thread.

Greenlets only switch when the running one yields; a CPU-bound handler (a
plain Python loop) never does.  The GIL, though, is handed between OS threads
every few milliseconds whatever the code does, so a real thread with its own
(non-gevent) ZeroMQ socket keeps telling the master this slave is alive, and
answers the master's RECALL at once: it cuts jobs this slave has not started
off its queue (``give_back``) and says which, so that a slave that runs dry
gets them while this one is still busy with a long job.

Everything this thread shares with the main (gevent) thread, and how each
is guarded.  The interpreter may switch threads between any two bytecodes,
so a Python-level loop over a container the other thread changes can fail
("deque mutated during iteration"); that once ended this thread silently,
and with it the heartbeats (leases ran out, jobs ran twice), the answers to
RECALL and the --job-timeout watchdog.

* ``session`` (run id, token, heartbeat interval): an immutable tuple the
  main thread replaces in one assignment (``join_run``), read once per use
  here, so a heartbeat never pairs one run's id with another's token.
* ``stopped``: a bool the main thread sets once; read at each step, and the
  wake pipe ends the wait at once.
* the wake pipe's two fds: made before the thread starts; closed by
  ``stop`` once the thread has ended, or by the thread itself when ``stop``
  gave up waiting for it, decided under ``_fds_lock``.
* the fixed fields (address, slave id, routing id, the callbacks): set
  before the thread starts, never changed.
* the pool's queue (``WorkerPool.todo``): changed by the main thread only,
  always under ``claim_lock`` (a real ``_thread`` lock, not gevent's);
  this thread goes through it only under that lock (``give_back``,
  ``waiting``).
* each batch's ``cursor`` and ``end``: workers claim (move ``cursor``) and
  ``give_back`` cuts (moves ``end``) under ``claim_lock``.  The main thread
  also reads them without it, only where a stale ``end`` is harmless: it
  only ever shrinks, and a claim looks again under the lock (``queued``
  is an estimate; ``_next_batch`` drops a batch once ``cursor`` reached
  ``end``, which stays so).
* the cuts not yet reported (``WorkerPool.cuts``): appended here and taken
  by the main thread, both under ``claim_lock``.
* the watched jobs (``WorkerPool.watched``): added and removed by the main
  thread under ``claim_lock``, listed here under it; each ``_Watch`` is
  written in the main thread only (the worker, its signal handler), and
  read here one attribute at a time: a stale value costs at most one
  signal, which the handler ignores.
* the main thread's id (``WorkerPool.main_thread``): fixed when the pool is
  made.  The watchdog's signal is sent to it; its Python handler runs in
  the main thread, never here.
* logging: never from this thread.  Once gevent has patched the process,
  the logging module's locks are gevent locks, which a second OS thread
  cannot wait on (LoopExit, in either thread).  What this thread has to
  say goes into ``_problems`` (list appends and pops are atomic) and the
  main thread logs it (``report_problems``, from the slave's loop).

Should anything here raise all the same, the loop reports it (once per
kind, with its traceback) and goes on beating: a dead liveness thread must
never be silent.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple

import zmq
from gevent import monkey

from taskmaster.wire import protocol

# The unpatched primitives: with monkey patching on, `threading` and
# its lock would give us greenlets, which is exactly what must not happen.
_start_new_thread = monkey.get_original("_thread", "start_new_thread")
_allocate_lock = monkey.get_original("_thread", "allocate_lock")
_sleep = monkey.get_original("time", "sleep")

log = logging.getLogger("taskmaster.slave")

STEP_SECONDS = 0.05


class Session(NamedTuple):
    """The run this slave belongs to, as the liveness thread tells the master."""

    run_id: str
    token: str
    interval: float  # seconds between heartbeats


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
        self.session = Session("", "", 10.0)
        self.stopped = False
        self._finished = _allocate_lock()
        self._wake_read = self._wake_write = -1
        self._fds_lock = _allocate_lock()
        self._ended = False  # the thread is past its loop (under _fds_lock)
        self._orphaned = False  # stop gave up waiting: the thread closes the pipe (under _fds_lock)
        self._reported: set[str] = set()  # kinds of unexpected errors reported already
        self._problems: list[tuple[str, str]] = []  # (message, kind) for the main thread to log
        self._last_beat, self._beat_run = 0.0, ""  # the thread's own

    def join_run(self, run_id: str, token: str, interval: float) -> None:
        """Beat for this run from now on (one assignment: the thread sees all of it or none)."""
        self.session = Session(run_id, token, interval)

    def report_problems(self) -> None:
        """Log what went wrong in the liveness thread since the last call: from the main thread only."""
        while self._problems:
            message, kind = self._problems.pop(0)
            log.error("%s", message, extra={"event": "liveness_error", "error": kind})

    def start(self) -> None:
        self._finished.acquire()
        # stop() writes a byte here: the thread, waiting on its socket and this
        # pipe, ends at once rather than at the end of its step.
        self._wake_read, self._wake_write = os.pipe()
        _start_new_thread(self._loop, ())

    def stop(self, wait: float = 1.0) -> None:
        self.stopped = True
        with self._fds_lock:
            if self._wake_write < 0 or self._orphaned:
                return  # never started, or stopped already
            os.write(self._wake_write, b"x")
        if self._finished.acquire(True, wait):
            self._finished.release()
        with self._fds_lock:
            if self._ended:
                self._close_pipe()
            else:
                self._orphaned = True  # still busy (a slow step): it closes the pipe when it ends

    def _close_pipe(self) -> None:
        # With _fds_lock held.
        for fd in (self._wake_read, self._wake_write):
            os.close(fd)
        self._wake_read = self._wake_write = -1

    def _loop(self) -> None:
        context = sock = None
        try:
            context = zmq.Context()
            sock = context.socket(zmq.DEALER)
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
            while not self.stopped:
                # Each part on its own, so that one failing stops none of the others.
                self._guarded(self._beat, sock)
                if self.watchdog is not None:
                    self._guarded(self.watchdog)
                if not self._guarded(self._listen, sock, poller):
                    _sleep(STEP_SECONDS)  # it did not wait: no busy loop, should it fail every time
        except Exception as exc:
            self._problem(f"the liveness thread could not start; no heartbeats from this slave: {exc!r}", exc)
        finally:
            if sock is not None:
                sock.close(0)
            if context is not None:
                context.term()
            with self._fds_lock:
                self._ended = True
                if self._orphaned:
                    self._close_pipe()
            self._finished.release()

    def _guarded(self, part: Callable[..., None], *args: Any) -> bool:
        """Run one part of a step; False, having said so, if it raised."""
        try:
            part(*args)
        except Exception as exc:
            self._unexpected(exc)
            return False
        return True

    def _beat(self, sock: Any) -> None:
        session = self.session
        now = time.monotonic()
        if session.run_id and (now - self._last_beat >= session.interval or self._beat_run != session.run_id):
            # At once for a new run: the master learns where to send recalls.
            self._last_beat, self._beat_run = now, session.run_id
            self._send(sock, protocol.heartbeat(self.slave_id, session.run_id, session.token))

    def _listen(self, sock: Any, poller: Any) -> None:
        """Wait a step for the master (or stop), and answer it."""
        if sock in dict(poller.poll(STEP_SECONDS * 1000)):
            self._answer(sock, sock.recv_multipart())

    def _unexpected(self, exc: Exception) -> None:
        """A bug here: say so, once per kind, with its traceback - and keep beating."""
        kind = type(exc).__name__
        if kind not in self._reported:
            self._reported.add(kind)
            self._problem(f"internal error in the liveness thread (it goes on): {kind}: {exc}", exc)

    def _problem(self, message: str, exc: Exception) -> None:
        text = "".join(traceback.format_exception(exc)).rstrip()
        self._problems.append((f"{message}\n{text}", type(exc).__name__))

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
        session = self.session
        if want > 0 and self.give_back is not None and session.run_id:
            # Answered also when there was nothing to give: the queue it
            # carries corrects the master's view of this slave.
            cuts, queue = self.give_back(want, upto)
            self._send(sock, protocol.give_back(self.slave_id, session.run_id, session.token, cuts, queue))
