"""One simulated clock, one queue of events, and cooperative processes on raw greenlets.

Every "process" of the simulation (a slave's request loop, its liveness
loop, the master's filler) is a plain ``greenlet`` - not a gevent one: nothing
here runs gevent's hub, whose loop keeps real time.  A process runs until it
waits (``Sim.wait``); then the scheduler takes the next event, in order of
(time, order of scheduling), so the whole run is a function of the seed.
"""

from __future__ import annotations

import heapq
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import gevent
import gevent.event
import greenlet

MIN_WAIT = 1e-6  # seconds: the shortest wait of a process


class Waiter:
    __slots__ = ("glet", "fired")

    def __init__(self, glet: greenlet.greenlet) -> None:
        self.glet = glet
        self.fired = False

    def wake(self, value: bool) -> None:
        if not self.fired and not self.glet.dead:
            self.fired = True
            self.glet.switch(value)


class SimEvent:
    """gevent.event.Event's set/clear/is_set/wait, on the simulated clock."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.flag = False
        self.waiters: list[Waiter] = []

    def set(self) -> None:
        self.flag = True
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            self.sim.soon(w.wake, True)

    def clear(self) -> None:
        self.flag = False

    def is_set(self) -> bool:
        return self.flag

    def wait(self, timeout: float | None = None) -> bool:
        if self.flag:
            return True
        return self.sim.wait(self, timeout)


class Sim:
    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list[tuple[float, int, Callable[..., Any], tuple]] = []
        self.order = 0
        self.main = greenlet.getcurrent()
        self.events = 0
        self.waiting: dict[greenlet.greenlet, Waiter] = {}  # what each process waits for, last
        self.timeout: SimTimeout | None = None  # the --job-timeout around the handler running now

    def at(self, when: float, fn: Callable[..., Any], *args: Any) -> None:
        self.order += 1
        heapq.heappush(self.heap, (max(when, self.now), self.order, fn, args))

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.at(self.now, fn, *args)

    def spawn(self, fn: Callable[..., Any], *args: Any) -> greenlet.greenlet:
        glet = greenlet.greenlet(fn, parent=self.main)
        self.soon(glet.switch, *args)
        return glet

    def kill(self, glet: greenlet.greenlet) -> None:
        """End a process: GreenletExit is raised where it waits (it never runs again).

        From another process, at the next event: a throw from there would
        switch to the victim and never come back to the caller.
        """
        if greenlet.getcurrent() is not self.main:
            self.soon(self.kill, glet)
        elif glet and not glet.dead:
            glet.throw(greenlet.GreenletExit)

    def wait(self, event: SimEvent | None, timeout: float | None) -> bool:
        """From a process: wait for `event` (None: only the time) or `timeout`; True if the event came."""
        waiter = Waiter(greenlet.getcurrent())
        self.waiting[waiter.glet] = waiter
        if event is not None:
            event.waiters.append(waiter)
        if timeout is not None:
            # A real wait takes some time however short it is asked to be: a
            # loop that waits 0 s until its clock moves must not spin here.
            self.at(self.now + max(timeout, MIN_WAIT), waiter.wake, False)
        return self.main.switch()

    def sleep(self, seconds: float) -> None:
        self.wait(None, seconds)

    def step(self) -> bool:
        """Run the next event; False when there is none."""
        if not self.heap:
            return False
        when, _, fn, args = heapq.heappop(self.heap)
        self.now = when
        self.events += 1
        fn(*args)
        return True


class SimGevent:
    """What taskmaster's modules use of gevent, on the simulated clock (patched in by `simulated`)."""

    GreenletExit = gevent.GreenletExit
    event = gevent.event  # JobSource makes its Event (replaced by a SimEvent before it is used)

    def __init__(self, sim: Sim, on_sleep: Callable[[], None] | None = None) -> None:
        self.sim = sim
        self.on_sleep = on_sleep

    def getcurrent(self) -> Any:
        return greenlet.getcurrent()

    def Timeout(self, seconds: float, exception: BaseException) -> SimTimeout:  # noqa: N802 - gevent's name
        return SimTimeout(self.sim, seconds, exception)

    def get_hub(self) -> SimHub:
        return SimHub(self.sim)

    def sleep(self, seconds: float = 0) -> None:
        if greenlet.getcurrent() is self.sim.main:
            # The master's loop yields so the filler can use new room (Master.tick):
            # here that is one step of the filler, at this simulated moment.
            if self.on_sleep is not None:
                self.on_sleep()
            return
        self.sim.sleep(seconds)


class SimTimeout:
    """gevent.Timeout around a handler (WorkerPool._run_with_timeout): the handler learns of it from `sim.timeout`.

    gevent raises the exception inside the handler at its first yield past
    the deadline; a simulated handler, which runs in one step when its
    simulated duration is over, raises it itself if that duration was longer.
    """

    def __init__(self, sim: Sim, seconds: float, exception: BaseException) -> None:
        self.sim, self.seconds, self.exception = sim, seconds, exception

    def __enter__(self) -> SimTimeout:
        self.sim.timeout = self
        return self

    def __exit__(self, *exc: Any) -> None:
        self.sim.timeout = None


class SimHub:
    """The hub's loop, as WorkerPool._run_with_timeout uses it: a timer around the handler running now."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.loop = self

    def timer(self, after: float, repeat: float = 0.0) -> SimTimer:
        return SimTimer(self.sim, after)


class SimTimer:
    """--job-timeout's timer: while it runs, the handler learns of it from `sim.timeout` (as with SimTimeout)."""

    def __init__(self, sim: Sim, seconds: float) -> None:
        self.sim, self.seconds = sim, seconds

    def start(self, callback: Callable[..., Any], *args: Any, update: bool = True) -> None:
        from taskmaster.slave.pool import _timed_out

        self.sim.timeout = SimTimeout(self.sim, self.seconds, _timed_out(self.seconds))

    def close(self) -> None:
        self.sim.timeout = None


@contextmanager
def simulated(sim: Sim, on_master_sleep: Callable[[], None]) -> Iterator[None]:
    """Inside: time.monotonic/perf_counter read the simulated clock, and gevent.sleep waits on it.

    Only for the simulation's own duration: other tests see the real clock.
    """
    fake = SimGevent(sim, on_master_sleep)
    from taskmaster.master import core as master
    from taskmaster.master import source
    from taskmaster.slave import core as slave
    from taskmaster.slave import lazy_pirate, pool

    clock = lambda: sim.now  # noqa: E731 - the one clock of the simulation
    with (
        mock.patch.object(time, "monotonic", clock),
        mock.patch.object(time, "perf_counter", clock),
        mock.patch.object(master, "gevent", fake),
        mock.patch.object(slave, "gevent", fake),
        mock.patch.object(pool, "gevent", fake),
        mock.patch.object(source, "gevent", fake),
        # Coarser than a real slave's 1 ms look at its socket while jobs run:
        # the simulated handlers take tens of ms, and every look is an event.
        mock.patch.object(lazy_pirate, "ACK_WHILE_WAITING", 0.01),
        # The state and failures files are real files, written by the real
        # code; no machine crashes here, so their fsyncs would only cost time.
        mock.patch.object(os, "fsync", lambda fd: None),
        mock.patch.object(os, "getpid", lambda: 4242),  # slaves say their pid: the same in every replay
    ):
        yield
