"""One simulated run, from a seed: the scenario, its faults, the processes, the checks.

``simulate(seed)`` draws everything from ``random.Random(seed)``: the jobs
and their iterator, the master's and slaves' settings, the network's
misbehaviour, and a schedule of faults until ``faults_end``; then the
network is reliable, a paused master is resumed, a stopped or crashed one is
started again, and the run must end within ``LIVENESS_SECONDS``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import tempfile
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from random import Random
from typing import Any
from unittest import mock

from taskmaster.config import MasterConfig, SlaveConfig
from taskmaster.failure_limit import FailureLimit
from taskmaster.master import registry
from taskmaster.master.core import Master
from taskmaster.master.outcome import Outcome
from taskmaster.master.shutdown import Phase
from taskmaster.wire import protocol

from . import invariants
from .jobs import KINDS_ALL, KINDS_STABLE, Jobs
from .master_host import MasterHost
from .network import Network, SimSocket
from .scheduler import Sim, simulated
from .slave import SlaveProcess

LIVENESS_SECONDS = 40.0  # after the faults stop, the run ends within this (simulated) time
CHECK_EVERY = 0.25  # seconds between two looks at the master's settings, once the faults stopped
# The world's faults, as often as each appears here.  Stalls come often: a
# stalled master meets every retry of a request at once, in one burst.
ISOLATION_SHARE = 0.1  # seeds whose master is cut off from every slave for a while
# In this share of the seeds the master forgets a lost slave after 2 leases,
# not registry.FORGET_AFTER_LEASES (10): a slave cut off that long then comes
# back to a master that no longer knows it, is told RESET and rejoins the
# same run - a path the short simulated runs would not reach otherwise.
FORGET_SOONER_SHARE = 0.25
FAULTS = ("cut", "cut", "stall", "stall", "stall", "kill", "kill", "crash", "pause", "pause", "rate", "stop")


@dataclass
class Result:
    seed: int
    error: str | None
    invariant: str | None
    digest: str
    end_time: float
    events: int
    trace: list[str] = field(default_factory=list)
    kind: str = ""
    seen: Counter[str] = field(default_factory=Counter)  # which paths the run went through (see World.note)


class World:
    def __init__(
        self, seed: int, tmp: str, changing: bool, size_check: bool, verbose: bool, job_timeouts: bool = True
    ) -> None:
        self.seed = seed
        self.rng = rng = Random(seed)
        self.verbose = verbose
        self.size_check = size_check
        self.lines: list[str] = []
        self.digest = hashlib.sha256()
        self.sim = Sim()
        self.net = Network(self.sim, rng, self.trace)
        self.host = MasterHost(self)
        self.net.master = self.host
        # Drawn apart from `rng` (added later): the scenarios of earlier seeds stay as they were.
        self.quirks = Random(f"quirks-{seed}")
        timeout = self.quirks.choice([None, None, None, 0.03])  # --job-timeout, in one seed in four
        self.job_timeout = timeout if job_timeouts else None
        kind = rng.choice(KINDS_ALL if changing else KINDS_STABLE)
        self.jobs = Jobs(rng, kind, rng.randint(20, 120), rng.uniform(0, 0.15), rng.uniform(0, 0.04), self.quirks)
        self.forget_sooner = self.quirks.random() < FORGET_SOONER_SHARE
        self.forget_after = 2 if self.forget_sooner else registry.FORGET_AFTER_LEASES
        limit = FailureLimit(count=rng.randint(0, 4)) if rng.random() < 0.25 else None
        self.config = MasterConfig(
            address="tcp://127.0.0.1:3050",
            size=rng.randint(4, 40),
            state_path=f"{tmp}/run.state",
            failures_path=f"{tmp}/run.failures.jsonl",
            lease_timeout=rng.choice([1.0, 2.0, 3.0]),
            max_retries=rng.randint(0, 3),
            grace=rng.choice([0.5, 2.0]),
            checkpoint_interval=rng.choice([0.3, 1.0]),
            progress=False,
            linger=0.0,
            max_failures=limit,
        )
        self.slave_count = rng.randint(1, 4)
        self.job_time = (rng.uniform(0.001, 0.01), rng.uniform(0.01, 0.08))
        if self.forget_sooner:  # a run that lasts past a slave's being forgotten, and its return
            self.job_time = (10 * self.job_time[0], 10 * self.job_time[1])
        self.faults_end = rng.uniform(1.0, 12.0)
        self.slaves: list[SlaveProcess] = []
        self.named = 0
        self.job_took = 0.0  # the simulated duration of the job whose handler runs now
        self.pause_answered: set[str] | None = None
        self.ever_lost: set[tuple[str, str]] = set()
        self.uncounted: dict[tuple[str, int], float] = {}
        self.saved: Any = None
        self.outcome: Outcome | None = None
        self.finished = False
        self.controls = 0
        self.healed_at = -1.0
        self.seen: Counter[str] = Counter()
        self.deadline = 0.0

    # ----------------------------------------------------------------- trace

    def trace(self, line: str) -> None:
        line = f"{self.sim.now:9.4f} {line}"
        self.digest.update(line.encode())
        if self.verbose:
            self.lines.append(line)

    def trace_message(self, src: str, dst: str, frames: list[bytes]) -> None:
        self.trace(f"{src}>{dst} {frames[0].decode()} {frames[1][:160].decode(errors='replace')}")
        self.note(frames)

    def note(self, frames: list[bytes]) -> None:
        """Count the paths a run goes through that the simulation must exercise."""
        kind = frames[0]
        if kind == protocol.RECALL:
            self.seen["recall"] += 1
        elif kind == protocol.GIVEBACK and b'"cuts":[]' not in frames[1]:
            self.seen["jobs given back"] += 1
        elif kind == protocol.REQUEST and b'"failures":[]' not in frames[1]:
            self.seen["failures reported"] += 1

    # ------------------------------------------------------------ processes

    def slave_config(self) -> SlaveConfig:
        rng = self.rng
        return SlaveConfig(
            address="sim://master",
            concurrency=rng.randint(1, 3),
            timeout_ms=rng.choice([200, 400, 800]),
            retries=rng.randint(2, 4),
            progress=False,
            wait_for_master=rng.choice([None, 0.0]),
            job_timeout=self.job_timeout,
        )

    def start_slave(self) -> None:
        if self.finished:
            return
        self.named += 1
        name = f"s{self.named}"
        self.trace(f"slave {name} starts")
        self.slaves.append(SlaveProcess(self, name, self.slave_config()))

    def slave_exited(self, proc: SlaveProcess) -> None:
        self.trace(f"slave {proc.name} exits {proc.exit_code}: {proc.slave.error or proc.slave.quit_reason}")
        self.slaves.remove(proc)
        # A supervisor (tm-spawn, a cluster engine) starts another while the run is not over.
        self.sim.at(self.sim.now + self.rng.uniform(0.1, 1.0), self.start_slave)

    def kill_slave(self) -> None:
        live = [p for p in self.slaves if p.alive]
        if live:
            proc = self.rng.choice(live)
            self.trace(f"slave {proc.name} killed")
            proc.kill()
            self.slaves.remove(proc)
            self.sim.at(self.sim.now + self.rng.uniform(0.1, 2.0), self.start_slave)

    def handle_job(self, job: Any) -> None:
        timeout = self.sim.timeout
        overdue = timeout is not None and self.job_took > timeout.seconds
        self.jobs.handle(job, timeout.exception if overdue and timeout is not None else None)

    def job_seconds(self) -> float:
        return self.rng.uniform(*self.job_time)

    def job_starts(self, proc: SlaveProcess, batch: Any, index: int) -> None:
        m = self.host.m
        # Once the run is over (CLOSING) every job is resolved: what a slave
        # still starts runs a second time, and there is nothing left to pause.
        if m is not None and proc.slave.run_id == m.run_id and m.phase is not Phase.CLOSING:
            invariants.no_start_while_paused(self, proc.name)

    # ---------------------------------------------------------------- master

    def master_config(self) -> MasterConfig:
        config = self.config
        if self.host.boots and self.sim.now >= self.faults_end:
            config.max_failures = None  # the user raised the limit (or fixed the handler) and ran it again
        return config

    def boot_master(self) -> None:
        if self.host.m is None and not self.finished:
            self.host.boot(self.master_config())

    def master_booted(self, m: Master) -> None:
        self.pause_answered = None
        self.saved = None

    def master_ended(self, outcome: Outcome, m: Master) -> None:
        self.pause_answered = None
        self.seen[f"ended {m.ended.value if m.ended else 'at start'}"] += 1
        if m.ended is None or m.ended.value == "complete" or "already finished" in (outcome.summary + outcome.error):
            self.outcome = outcome
            self.finished = True
            return
        # Stopped, halted: the user runs the same command again.
        if m.pace.halted:
            self.config.max_failures = None
        self.sim.at(self.sim.now + self.rng.uniform(0.1, 1.0), self.boot_master)

    def after_master_step(self, m: Master) -> None:
        invariants.window(m, self.size_check)
        if m.phase is Phase.RUNNING:
            invariants.slaves_hold_counted_batches(self, m)
        if self.pause_answered is not None and not m.pace.paused:
            self.pause_answered = None
        for record in m.registry.slaves.values():
            if record.lost and (m.run_id, record.id) not in self.ever_lost:
                self.ever_lost.add((m.run_id, record.id))
                self.seen["lease lost"] += 1
        if m.saver._saved is not self.saved:
            self.saved = m.saver._saved
            invariants.state_file(m, self)

    def control_answered(self, answer: dict) -> None:
        m = self.host.m
        if answer.get("command") == "pause" and answer.get("unsettled_slaves") == 0 and m is not None and m.pace.paused:
            self.pause_answered = {r.id for r in m.registry.slaves.values() if r.live}

    def control(self, command: str, rate: float | None = None) -> None:
        self.controls += 1
        sock = SimSocket(self.net, f"ctl-{self.controls}".encode(), "ctl")
        self.net.open(sock)
        self.trace(f"ctl-{self.controls}>m CONTROL {command} {rate}")
        sock.send_multipart(protocol.control_request(command, rate, 2000))
        self.sim.at(self.sim.now + 2.0, self.net.close, sock)

    # ---------------------------------------------------------------- faults

    def schedule_faults(self) -> None:
        rng, f = self.rng, self.net.faults
        f.drop = rng.choice([0.0, 0.0, 0.01, 0.05])
        f.duplicate = rng.choice([0.0, 0.02, 0.1])
        f.jitter = rng.choice([0.0, 0.005, 0.03])
        f.long_delay = rng.choice([0.0, 0.02, 0.1])
        f.long_delay_seconds = rng.choice([0.3, 1.0, 2.5])
        for _ in range(rng.randint(0, 12)):
            at = rng.uniform(0.0, self.faults_end)
            what = rng.choice(FAULTS)
            self.sim.at(at, self.fault, what)
        self.sim.at(self.faults_end, self.calm)
        # The master's host cut off from every slave past their leases: all are
        # lost, and come back (or are replaced) when the link is.  Drawn from
        # `quirks`, like everything added after the first seeds were recorded.
        if self.forget_sooner:
            self.sim.at(self.quirks.uniform(0.0, self.faults_end), self.cut_a_patient_slave)
        if self.quirks.random() < ISOLATION_SHARE:
            at = self.quirks.uniform(0.0, self.faults_end)
            self.sim.at(at, self.isolate_master, self.quirks.uniform(1.5, 4.0) * self.config.lease_timeout)

    def cut_a_patient_slave(self) -> None:
        """Cut off a slave that waits for its master for ever, long enough to be forgotten (forget_after)."""
        patient = [p for p in self.slaves if p.slave.config.wait_for_master == 0]
        if patient:
            host = patient[self.quirks.randrange(len(patient))].host
            self.trace(f"cut {host} (patient)")
            self.net.faults.cut.add(host)
            seconds = self.quirks.uniform(2.5, 4.0) * self.config.lease_timeout
            self.sim.at(self.sim.now + seconds, self.heal, host)

    def isolate_master(self, seconds: float) -> None:
        self.trace(f"master cut off for {seconds:.1f}s")
        self.net.faults.isolated = True
        self.sim.at(self.sim.now + seconds, self.reconnect_master)
        self.deadline = max(self.deadline, self.sim.now + seconds + LIVENESS_SECONDS)

    def reconnect_master(self) -> None:
        self.trace("master reachable again")
        self.net.faults.isolated = False

    def fault(self, what: str) -> None:
        rng = self.rng
        if what == "cut" and self.slaves:
            host = rng.choice(self.slaves).host
            self.trace(f"cut {host}")
            self.net.faults.cut.add(host)
            self.sim.at(self.sim.now + rng.uniform(0.1, 3.0 * self.config.lease_timeout), self.heal, host)
        elif what == "stall":
            self.host.stall(rng.uniform(0.2, 2.0 * self.config.lease_timeout))
        elif what == "kill":
            self.kill_slave()
        elif what == "crash" and self.host.m is not None:
            self.host.crash()
            self.sim.at(self.sim.now + rng.uniform(0.05, 2.0), self.boot_master)
        elif what == "pause":
            self.control("pause")
            self.sim.at(self.sim.now + rng.uniform(0.1, 3.0), self.control, "resume")
        elif what == "rate":
            self.control("rate", rng.choice([None, 5.0, 50.0, 500.0]))
        elif what == "stop":
            self.control("stop")

    def heal(self, host: str) -> None:
        self.trace(f"heal {host}")
        self.net.faults.cut.discard(host)

    def calm(self) -> None:
        """The faults stop: a reliable network, a running unpaused master without a rate limit."""
        self.trace("faults stop")
        self.net.faults.calm()
        self.host.stalled_until = min(self.host.stalled_until, self.sim.now)
        self.settle_controls()

    def settle_controls(self) -> None:
        """After the faults: resume a paused master, lift a rate limit (again, should a late pause come)."""
        m = self.host.m
        if m is None or self.sim.now - self.healed_at < 1.0:
            return
        if m.pace.paused or m.pace.rate_limit is not None:
            self.healed_at = self.sim.now
            self.control("resume" if m.pace.paused else "rate")

    # ------------------------------------------------------------------ run

    def run(self) -> None:
        self.boot_master()
        for _ in range(self.slave_count):
            self.start_slave()
        self.schedule_faults()
        self.sim.at(0.0, self.look)
        # Jobs ten times as slow (forget_sooner) take up to ten times as long to finish.
        self.deadline = self.faults_end + LIVENESS_SECONDS * (10 if self.forget_sooner else 1)
        sim = self.sim
        while not self.finished:
            if not sim.step():
                raise invariants.Violation("run-ends", "nothing left to happen, and the run is not over")
            if sim.now > self.deadline:
                m = self.host.m
                phase = m.phase.value if m is not None else "down"
                held = {r.id: sorted(r.batches) for r in m.registry.slaves.values() if r.batches} if m else {}
                raise invariants.Violation(
                    "run-ends",
                    f"the run did not end by {self.deadline:.1f}s (the faults stopped at {self.faults_end:.1f}s) "
                    f"(master {phase}; batches held: {held})",
                )
        invariants.at_the_end(self, self.config.state_path, self.config.failures_path)

    def stop_everything(self) -> None:
        """The simulation is over: every process still waiting ends here, not whenever it is collected."""
        for proc in list(self.slaves):
            proc.kill()
        self.host.stop()

    def look(self) -> None:
        if self.sim.now >= self.faults_end:
            self.settle_controls()
        if not self.finished:
            self.sim.at(self.sim.now + CHECK_EVERY, self.look)


def simulate(
    seed: int, changing: bool = False, size_check: bool | None = None, verbose: bool = False, job_timeouts: bool = True
) -> Result:
    """Run seed `seed`; the Result says which invariant failed, if one did."""
    size_check = invariants.SIZE_IS_A_BOUND if size_check is None else size_check
    ids = Random(f"ids-{seed}")
    with tempfile.TemporaryDirectory(prefix="tm-sim-") as tmp:
        world = World(seed, tmp, changing, size_check, verbose, job_timeouts)
        quiet = logging.root.manager.disable
        logging.disable(logging.CRITICAL)
        error: invariants.Violation | None = None
        try:
            with (
                simulated(world.sim, world.host.run_filler),
                _seeded_ids(ids),
                mock.patch.object(registry, "FORGET_AFTER_LEASES", world.forget_after),
            ):
                try:
                    world.run()
                except invariants.Violation as exc:
                    error = exc
                except Exception as exc:  # an exception out of the master or a slave is a failure too
                    detail = "".join(traceback.format_exception(exc)[-3:]).strip().replace("\n", " | ")
                    error = invariants.Violation("no-exception", f"{type(exc).__name__}: {exc} ({detail})")
                    world.trace(traceback.format_exc())
                finally:
                    world.stop_everything()
        finally:
            logging.disable(quiet)
    return Result(
        seed=seed,
        error=str(error) if error else None,
        invariant=error.invariant if error else None,
        digest=world.digest.hexdigest()[:16],
        end_time=world.sim.now,
        events=world.sim.events,
        trace=world.lines,
        kind=world.jobs.kind,
        seen=world.seen,
    )


@contextmanager
def _seeded_ids(rng: Random) -> Iterator[None]:
    """uuid4 and secrets.token_hex from the seed: run ids and tokens, hence the trace, replay exactly."""
    saved = uuid.uuid4, secrets.token_hex
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)  # type: ignore[assignment]
    secrets.token_hex = lambda n=32: f"{rng.getrandbits(8 * n):0{2 * n}x}"  # type: ignore[assignment]
    try:
        yield
    finally:
        uuid.uuid4, secrets.token_hex = saved
