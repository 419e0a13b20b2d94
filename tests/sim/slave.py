"""A simulated slave process: the real ``Slave``, ``LazyPirateClient`` and ``WorkerPool``, on simulated sockets.

What runs for real: ``Slave._hello``, ``_talk``, ``_next_request``,
``_build_request``, ``_take_reply``, ``_forget_run``, ``_farewell`` and
``_wait_for_news``; ``LazyPirateClient.ask`` (one request in flight, a new
connection ``<request_id>.<N+1>`` and the same request on a timeout);
``WorkerPool.add``, ``take_report``, ``take_acks``, ``give_back``,
``waiting``, ``forget``, ``_run`` and ``_run_with_timeout`` (the handler,
the finished byte, the failure record); ``HeartbeatThread._answer`` (a
RECALL answered by a GIVEBACK).  What is modelled, and why: the pool's
worker greenlets and the liveness thread's loop wait on gevent's hub and a
real thread, so here they are scheduled events - a worker claims one job
under the pool's claim lock as ``WorkerPool._work`` does (one at a time:
the simulated jobs are never fast enough for more), and calls the real
``_run`` (``_run_with_timeout`` under ``--job-timeout``) when its simulated
duration is over, or the timeout; the liveness loop beats every
``interval`` (at once for a new run) and reads its socket, as
``HeartbeatThread._loop`` does.
"""

from __future__ import annotations

from typing import Any

from taskmaster.config import SlaveConfig
from taskmaster.progress import Progress
from taskmaster.slave.core import Slave
from taskmaster.slave.heartbeat import STEP_SECONDS, HeartbeatThread
from taskmaster.slave.lazy_pirate import LazyPirateClient, Patience
from taskmaster.wire import protocol

from .network import Network, SimSocket
from .scheduler import Sim, SimEvent


class SimClient(LazyPirateClient):
    """The real Lazy Pirate client; only its socket is simulated."""

    def __init__(self, net: Network, host: str, patience: Patience, prefix: str) -> None:
        super().__init__("sim://master", None, patience, prefix)
        self.net = net
        self.host = host

    def connect(self) -> None:
        self.close()
        self.connections += 1
        self.socket = SimSocket(self.net, f"{self.routing_prefix}.{self.connections}".encode(), self.host)
        self.net.open(self.socket)

    def close(self) -> None:
        if self.socket is not None:
            self.net.close(self.socket)
            self.socket = None

    def read_handshake_events(self) -> None:
        pass  # no CURVE here: nothing to refuse


class SimHeartbeat(HeartbeatThread):
    """The liveness thread's state; a new run wakes its loop at once, as the real 50 ms step would."""

    def __init__(self, *args: Any, wake: SimEvent, **kwargs: Any) -> None:
        self._wake = wake
        self._run_id = ""
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def run_id(self) -> str:
        return self._run_id

    @run_id.setter
    def run_id(self, value: str) -> None:
        if value != self._run_id:
            self._run_id = value
            self._wake.set()


class Trigger:
    """The pool's work_ready event: setting it gives idle workers their next job."""

    def __init__(self, sim: Sim, fn: Any) -> None:
        self.sim, self.fn = sim, fn

    def set(self) -> None:
        self.sim.soon(self.fn)

    def clear(self) -> None:
        pass


class SlaveProcess:
    """One slave process: its request loop and liveness loop (greenlets) and its workers (events)."""

    def __init__(self, world: Any, name: str, config: SlaveConfig) -> None:
        self.world = world
        self.sim: Sim = world.sim
        self.net: Network = world.net
        self.name = name
        self.host = name
        self.alive = True
        self.exit_code: int | None = None
        s = self.slave = Slave(world.handle_job, config, client=_placeholder())
        s.host, s.id = name, name
        s.request_id, s.beat_id = f"req-{name}", f"beat-{name}"
        s.client = SimClient(self.net, name, s.patience, s.request_id)
        s.progress = Progress(False, show_queue=False)
        pool = s.pool
        pool.news, pool.running_low = SimEvent(self.sim), SimEvent(self.sim)
        pool.work_ready = Trigger(self.sim, self._work)
        self.beat_wake = SimEvent(self.sim)
        s.heartbeat = SimHeartbeat(
            "sim://master", s.id, None, None, pool.give_back, s.beat_id.encode(), wake=self.beat_wake
        )
        self.free = config.concurrency
        # Batches received since the last hello, and jobs of each running now:
        # what this incarnation holds (invariants.slaves_hold_counted_batches).
        self.received: list[Any] = []
        self.running: dict[int, int] = {}
        add, forget = pool.add, pool.forget
        pool.add = lambda batch: (self.received.append(batch), add(batch))[1]  # type: ignore[method-assign]
        pool.forget = lambda: (self.received.clear(), forget())[1]  # type: ignore[method-assign]
        forget_run = s._forget_run

        def rejoin(why: str) -> None:  # the real _forget_run; the world counts which run it rejoined
            before = s.run_id
            forget_run(why)
            if before and s.run_id:
                world.seen["reset, same run" if s.run_id == before else "reset, new run"] += 1

        s._forget_run = rejoin  # type: ignore[method-assign]
        self.beat_sock: SimSocket | None = None
        self.main = self.sim.spawn(self._main)
        self.liveness: Any = None

    # ------------------------------------------------------------ request loop

    def _main(self) -> None:
        s = self.slave
        s.started = self.sim.now
        s._rate_mark = (s.started, 0)
        code = 1
        if not self.alive:
            return  # killed before it ever ran
        try:
            s.client.connect()
            if not s._hello():
                code = 0 if s.quit_reason is not None else 1
                return
            self.beat_sock = SimSocket(self.net, s.beat_id.encode(), self.host)
            self.beat_sock.arrived = self.beat_wake
            self.net.open(self.beat_sock)
            self.liveness = self.sim.spawn(self._beat)
            code = s._talk()
        finally:
            if self.alive:  # ended by itself (quit, or gave up on the master), not killed
                self.exit_code = code
                self._stop()
                self.world.slave_exited(self)

    def _stop(self) -> None:
        self.alive = False
        self.slave.client.close()
        if self.beat_sock is not None:
            self.net.close(self.beat_sock)
        if self.liveness is not None:
            self.sim.kill(self.liveness)

    def holding(self) -> list[Any]:
        """The batches received since the last hello with jobs not started or still running."""
        self.received = [b for b in self.received if b.cursor < b.end or self.running.get(id(b))]
        return self.received

    def kill(self) -> None:
        """SIGKILL: everything stops now; jobs running here never finish."""
        if not self.alive:
            return
        self._stop()
        self.sim.kill(self.main)

    # ---------------------------------------------------------------- liveness

    def _beat(self) -> None:
        hb, sock = self.slave.heartbeat, self.beat_sock
        assert sock is not None
        last_beat, beat_run = 0.0, ""
        while self.alive:
            now = self.sim.now
            if hb.run_id and (now - last_beat >= hb.interval or beat_run != hb.run_id):
                last_beat, beat_run = now, hb.run_id
                hb._send(sock, protocol.heartbeat(hb.slave_id, hb.run_id, hb.token))
            due = last_beat + hb.interval - now if hb.run_id else 3600.0
            if sock.poll(max(STEP_SECONDS, due) * 1000):
                hb._answer(sock, sock.recv_multipart())

    # ----------------------------------------------------------------- workers

    def _work(self) -> None:
        """Free workers claim the next jobs, as WorkerPool._work does (one job a claim)."""
        pool = self.slave.pool
        while self.alive and self.free > 0 and pool.accepting:
            batch = pool._next_batch()
            if batch is None:
                if not pool.running and pool.idle_since is None:
                    pool.idle_since = self.sim.now
                return
            with pool.claim_lock:
                start = batch.cursor
                end = min(start + 1, batch.end)
                batch.cursor = end
            if start >= end:
                continue
            self.free -= 1
            pool.running += 1
            self.running[id(batch)] = self.running.get(id(batch), 0) + 1
            self.world.job_starts(self, batch, start)
            seconds = self.world.job_seconds()
            # Past --job-timeout, gevent.Timeout stops the handler then.
            busy = min(seconds, pool.job_timeout) if pool.job_timeout else seconds
            self.sim.at(self.sim.now + busy, self._done, batch, start, end, seconds)

    def _done(self, batch: Any, start: int, end: int, seconds: float) -> None:
        if not self.alive:
            return  # killed meanwhile: the handler never got to its end
        pool = self.slave.pool
        pool.running -= 1
        self.free += 1
        self.running[id(batch)] -= 1
        self.world.job_took = seconds
        if pool.job_timeout:
            pool._run_with_timeout(batch, start)
        else:
            pool._run(batch, start, end)
        self._work()


def _placeholder() -> Any:
    """Stands for the client while Slave.__init__ runs (the simulated one needs the slave's id)."""

    class _Nothing:
        round_trip = 0.0

    return _Nothing()
