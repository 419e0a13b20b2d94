"""Property tests: whatever happens, the checkpoint never skips and never double-counts.

A hypothesis state machine plays the master's bookkeeping - the ledger, the
slave registry, the failures and the checkpoint - through any order of
filling, handing out, acknowledgements (early, late, repeated, from a slave
already written off), failures and retries, given-back jobs, lost slaves,
checkpoints and crashes followed by a resume from the last checkpoint.  Jobs
are the integers 0..N-1 and ``get_jobs(last)`` is ``range(last, N)``, as in
the README's example, so a job's value names its position in the first run.

After every step:
* the state file, read back as a resumed master reads it, covers only jobs
  that really finished or failed for good (it never skips an unfinished job);
* its counts equal the number of jobs it covers (it never reports one twice).
And at the end a last resume runs everything left: every job is covered, and
the counts equal the number of jobs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from taskmaster.master import checkpoint
from taskmaster.master import failures_file as failures
from taskmaster.master.identity import FinishedBefore
from taskmaster.master.ledger import Ledger
from taskmaster.master.registry import SlaveRegistry
from taskmaster.wire.protocol import Failure
from taskmaster.wire.ranges import expand, to_ranges, within

N = 40
SLAVES = ("a", "b", "c")
TARGET, KWARGS = "jobs:get_jobs", {"n": str(N)}


def covered(state: checkpoint.State | None) -> set[int]:
    """The job values (first-run positions) a state file says are resolved."""
    if state is None or not state.has_anchor:
        return set()
    # Positions below the anchor's are all resolved; from there on, the listed ranges.
    # Values equal first-run positions, and a resumed run numbers jobs from the
    # anchor's value at the anchor's position, so shift back by the difference.
    shift = state.anchor - state.position
    return set(range(0, state.anchor)) | {p + shift for p in expand(state.resolved)}


class Bookkeeping(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="tm-prop-"))
        self.state_path = str(self.dir / "run.state")
        self.resolved: set[int] = set()  # jobs (values) that really finished or failed for good

    @initialize(size=st.integers(1, 12), stretch=st.sampled_from([1, 4]), max_retries=st.integers(0, 2))
    def start(self, size: int, stretch: int, max_retries: int) -> None:
        self.size, self.stretch, self.max_retries = size, stretch, max_retries
        self._open(None)

    def _open(self, state: checkpoint.State | None) -> None:
        """A master starting: from scratch, or resuming from `state`."""
        resume = state is not None and state.has_anchor
        base = state if resume else checkpoint.State(TARGET, KWARGS)
        start = base.position if resume else 0
        before = FinishedBefore(expand(base.resolved), base.prints, self.size * self.stretch) if resume else None
        self.ledger = Ledger(self.size, start=start, before=before, stretch=self.stretch)
        self.registry = SlaveRegistry(self.ledger, lease_timeout=10.0)
        self.failed_jobs = failures.FailedJobs(str(self.dir / "run.failures.jsonl"), self.max_retries)
        self.saver = checkpoint.Saver(self.state_path, base)
        self.next_value = base.anchor if resume else 0  # get_jobs(last=anchor) starts at the anchor
        self.offset = (base.anchor - base.position) if resume else 0  # value = position + offset
        self.held: dict[str, list[tuple[int, int]]] = {s: [] for s in SLAVES}  # (batch, position) not yet run
        self.now = 0.0
        for name in SLAVES:
            self.registry.join(name, "host", 1, 1, 1000, name.encode(), self.now)

    def _slave(self, name: str):
        return self.registry.get(name)

    # ------------------------------------------------------------ the run

    @rule(k=st.integers(1, 8))
    def fill(self, k: int) -> None:
        k = min(k, self.ledger.space(), N - self.next_value)
        if k > 0:
            self.ledger.add(list(range(self.next_value, self.next_value + k)))
            self.next_value += k

    @rule(name=st.sampled_from(SLAVES), want=st.integers(1, 6))
    def hand_out(self, name: str, want: int) -> None:
        slave = self._slave(name)
        if not slave.live:
            return
        jobs, ranges = self.ledger.take(want, name, alone=self.registry.live_count() == 1)
        if not jobs:
            return
        positions = expand(ranges)
        assert jobs == [p + self.offset for p in positions], "a job handed out is not the one at its position"
        batch = self.registry.hand_out(slave, ranges)
        self.held[name] += [(batch, p) for p in positions]

    @rule(name=st.sampled_from(SLAVES), k=st.integers(1, 4), late=st.booleans())
    def finish(self, name: str, k: int, late: bool) -> None:
        """The slave runs its next k jobs and acknowledges them (even if written off meanwhile)."""
        slave = self._slave(name)
        done, self.held[name] = self.held[name][:k], self.held[name][k:]
        if not done or (slave.gone and not late):
            return
        for _, p in done:
            self.resolved.add(p + self.offset)  # it ran: a job may run twice, never be lost
        if slave.gone:
            return  # the master ignores a slave that said goodbye
        for batch_id in {b for b, _ in done}:
            ranges = to_ranges(p for b, p in done if b == batch_id)
            batch = slave.batches.get(batch_id)
            if batch is None or not within([tuple(r) for r in ranges], batch.ranges):
                continue  # as the master does: only jobs still under this slave's lease
            slave.finished += self.ledger.mark_done(ranges)
            self.registry.settle(slave, batch_id)

    @rule(name=st.sampled_from(SLAVES))
    def fail(self, name: str) -> None:
        """The slave's next job raises."""
        slave = self._slave(name)
        if not self.held[name] or slave.gone:
            return
        (batch_id, p), self.held[name] = self.held[name][0], self.held[name][1:]
        batch = slave.batches.get(batch_id)
        if batch is None or not within([(p, p + 1)], batch.ranges):
            return
        pending = self.ledger.is_pending(p)
        self.failed_jobs.failed(self.ledger, Failure(batch_id, p, "ValueError", "boom", ""), name)
        if pending and not self.ledger.is_pending(p):
            self.resolved.add(p + self.offset)  # failed for good: recorded in the failures file

    @rule(name=st.sampled_from(SLAVES), keep=st.integers(0, 3))
    def give_back(self, name: str, keep: int) -> None:
        """The slave gives back the unstarted tail of its newest batch."""
        slave = self._slave(name)
        if not self.held[name] or slave.gone:
            return
        batch_id = self.held[name][-1][0]
        batch = slave.batches.get(batch_id)
        if batch is None or batch.expired:
            return
        started = batch.size - sum(1 for b, _ in self.held[name] if b == batch_id)
        keep = max(started, min(keep + started, batch.keep - 1))
        if keep >= batch.keep:
            return
        positions = expand(batch.handed)
        self.registry.give_back(slave, batch_id, keep)
        cut = set(positions[keep:])
        self.held[name] = [(b, p) for b, p in self.held[name] if not (b == batch_id and p in cut)]

    @rule(name=st.sampled_from(SLAVES))
    def lose(self, name: str) -> None:
        """The slave goes silent past its lease: its jobs go to others (it may still ack them)."""
        slave = self._slave(name)
        if slave.live:
            self.now += 11.0
            for other in SLAVES:
                if other != name:
                    self.registry.seen(self._slave(other), self.now)
            self.registry.expire(self.now)

    @rule(name=st.sampled_from(SLAVES))
    def leave(self, name: str) -> None:
        slave = self._slave(name)
        if slave.live:
            self.registry.leave(slave)
            self.held[name] = []

    @rule()
    def save(self) -> None:
        self.saver.save(self.ledger, N)

    @rule()
    def crash_and_resume(self) -> None:
        """SIGKILL: everything in memory is gone; a new master resumes from the state file."""
        self._open(checkpoint.load(self.state_path, TARGET, KWARGS) if Path(self.state_path).exists() else None)

    # ------------------------------------------------------- invariants

    @invariant()
    def state_file_is_exact(self) -> None:
        if not Path(self.state_path).exists():
            return
        state = checkpoint.load(self.state_path, TARGET, KWARGS)
        seen = covered(state)
        assert seen <= self.resolved, f"the checkpoint skips unfinished jobs {sorted(seen - self.resolved)}"
        assert state.finished + state.failed == len(seen), "the checkpoint counts a job twice (or misses one)"

    def teardown(self) -> None:
        """Resume once more and run everything left on one slave: all N jobs, each counted once."""
        try:
            if hasattr(self, "ledger"):
                self.saver.save(self.ledger, N)
                self.crash_and_resume()
                for name in SLAVES[1:]:
                    self.registry.leave(self._slave(name))
                while not (self.next_value == N and self.ledger.drained()):
                    self.fill(N)
                    self.hand_out("a", N)
                    self.finish("a", N, False)
                self.saver.save(self.ledger, N, complete=self.ledger.drained())
                state = checkpoint.load(self.state_path, TARGET, KWARGS)
                assert covered(state) == set(range(N)), "a job is neither finished nor failed"
                assert state.finished + state.failed == N
        finally:
            for path in self.dir.iterdir():
                path.unlink()
            self.dir.rmdir()


TestBookkeeping = Bookkeeping.TestCase
TestBookkeeping.settings = settings(
    max_examples=80, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("positions", [[], [3], [5, 1, 2, 2, 9, 10]])
def test_covered_reads_back_what_a_fresh_save_wrote(tmp_path, positions):
    ledger = Ledger(16)
    ledger.add(list(range(12)))
    ledger.mark_done(to_ranges(p for p in positions if p < 12))
    saver = checkpoint.Saver(str(tmp_path / "s.state"), checkpoint.State(TARGET, KWARGS))
    saver.save(ledger, None)
    state = checkpoint.load(str(tmp_path / "s.state"), TARGET, KWARGS)
    assert covered(state) == {p for p in positions if p < 12}
