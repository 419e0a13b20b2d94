"""How a master's run ends: its phases, and the quit/linger sequence (described here, once).

A run goes through three phases::

    RUNNING --(signal, tm-ctl stop, --max-failures, disk error)--> STOPPING
    RUNNING --(every job resolved, or get_jobs failed)-----------> CLOSING
    STOPPING --(no job in flight, or --grace ran out)-------------> CLOSING

RUNNING
    Jobs are handed out; requests that find none are parked.
STOPPING
    No job is handed out any more: requests are answered NO_JOBS and the
    master waits for the jobs in flight, whose acknowledgements still count,
    for --grace seconds at most.  A second signal, or a failed write of the
    failures file (a failed job that cannot be recorded must not be counted
    as resolved), ends the wait at once.
CLOSING
    The run is over; its ``EndReason`` is known, and tm-status shows it.
    The quit/linger sequence:

    1. Every live slave not told yet gets QUIT on its request socket (a slave
       busy with long jobs may have nothing to ask, but it watches that
       socket while idle).
    2. From now on, every hello, request and parked request is answered QUIT.
    3. The master lingers, still answering, until a moment passed without a
       word (``QUIET_SECONDS``: a request already on its way when the run
       ended arrives within moments), or until every slave that joined has
       said BYE (a slave told to quit says so, with its last
       acknowledgements: nothing more can come from it), and at most
       ``QUIT_LINGER_SECONDS`` after the end - but in any case until
       ``--linger`` seconds after the start, so that slaves started with the
       master (tm-spawn beside tm-master) hear "quit" even if the run was
       over before they joined, instead of finding no master.
    4. Then the last checkpoint is written (with what the stragglers
       acknowledged), the ``Outcome`` is built and the socket is closed.
"""

from __future__ import annotations

import enum

from taskmaster.wire import protocol

QUIT_LINGER_SECONDS = 0.5  # after telling slaves to quit, how long to answer stragglers, at most
QUIET_SECONDS = 0.05  # ... and at least: once every slave was told and this long passed without a word, done


class Phase(enum.Enum):
    RUNNING = "running"
    STOPPING = "stopping"  # asked to stop: waiting for the jobs in flight, within --grace
    CLOSING = "closing"  # the run is over: slaves are told to quit, the master lingers


class Shutdown:
    """The phase of a run and the times that end each phase."""

    def __init__(self, grace: float, linger: float) -> None:
        self.grace = grace
        self.linger = linger
        self.phase = Phase.RUNNING
        self.stop_signal: int | None = None  # the signal that asked to stop (tm-ctl stop, halting: SIGTERM)
        self.stop_deadline = 0.0  # STOPPING: stop waiting for the jobs in flight then
        self.linger_deadline = 0.0  # CLOSING: stop answering then, whatever comes
        self.quiet_until = 0.0  # CLOSING: ... or once nothing came until then
        self.linger_until = 0.0  # CLOSING: ... but not before --linger after the start

    @property
    def running(self) -> bool:
        return self.phase is Phase.RUNNING

    def stop(self, signum: int, now: float) -> bool:
        """Asked to stop (a signal, tm-ctl stop, halting): True the first time, when the wait starts."""
        if self.phase is Phase.RUNNING:
            self.phase = Phase.STOPPING
            self.stop_signal = signum
            self.stop_deadline = now + self.grace
            return True
        if self.phase is Phase.STOPPING:
            self.stop_deadline = now  # asked again: stop now
        return False

    def stop_now(self, signum: int, now: float) -> None:
        """Stop without waiting for the jobs in flight."""
        if self.phase is not Phase.CLOSING:
            self.phase = Phase.STOPPING
            self.stop_signal = self.stop_signal or signum
            self.stop_deadline = now

    def wait_over(self, in_flight: int, now: float) -> bool:
        """STOPPING: is the wait for the jobs in flight over?"""
        return in_flight == 0 or now >= self.stop_deadline

    def close(self, now: float, started: float) -> None:
        """The run is over at `now`: start lingering (see the module's docstring)."""
        self.phase = Phase.CLOSING
        self.linger_until = started + self.linger
        self.linger_deadline = max(now + QUIT_LINGER_SECONDS, self.linger_until)
        self.quiet_until = now + QUIET_SECONDS

    def quit_reason(self) -> str:
        """CLOSING: what every QUIT says.  A run stopped before its end says so: a slave that waits for
        its master (--wait-for-master) then waits for the next one rather than exit."""
        return protocol.QUIT_STOPPING if self.stop_signal is not None else "the run is over"

    def heard(self, now: float) -> None:
        """CLOSING: a message came; stay a moment longer for the next."""
        self.quiet_until = now + QUIET_SECONDS

    def lingered(self, now: float, everyone_left: bool = False) -> bool:
        """CLOSING: is it time to stop answering?  `everyone_left`: no slave that joined is still there."""
        if now > self.linger_deadline:
            return True
        return now > self.linger_until and (everyone_left or now > self.quiet_until)
