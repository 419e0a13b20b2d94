"""The chaos test: nothing is lost while the master and the slaves keep dying.

One master and three slaves, each a separate process, work through 50,000
jobs of the recording module.  Every 0.5-1.5 s (seeded, so a failure can be
replayed with TM_CHAOS_SEED) the test SIGKILLs the master or a random slave
and starts it again with the same command, for about 30 s or until the run
is over.  Then every job must have been handled at least once (or be in the
failures file), and the jobs handled more than once must be within what the
design allows:

* a SIGKILLed master forgets the jobs acknowledged since its last checkpoint
  (written every second) and those its slaves finished but had not yet
  acknowledged, which are among the at most --size jobs it held: at most
  --size + the jobs handled in the last ~2 s before the kill;
* a SIGKILLed slave takes with it the acknowledgements of the jobs it
  finished since its last report (one round trip to the master, a few
  milliseconds; the bound allows half a second of the whole run's rate).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from conftest import ProgressWatch, handled, tcp_address, tm

pytestmark = pytest.mark.slow

N = 50_000
SIZE = 2000
SLAVES = 3
CONCURRENCY = 10
LEASE = 2
# 3 slaves x 10 greenlets x 20 ms per job: at most 1500 jobs/s, so the run
# lasts long enough to be hit a few dozen times, and the second's worth of
# work a master kill may repeat stays well below N.
DELAY = "0.02"
CHAOS_SECONDS = 30.0
MASTER_SHARE = 0.25  # chance that a hit is aimed at the master
CHECKPOINT_LAG = 1.5  # seconds: checkpoint interval (1 s) + a busy master's delay + acknowledgement latency
SLAVE_ACK_LAG = 0.25  # seconds of acknowledgements a killed slave may take with it (generous)
SLACK = 2 * SLAVES * CONCURRENCY  # jobs running anywhere at the moment of a kill, twice over


def _start(procs, argv: list[str], log: Path, env: dict) -> subprocess.Popen:
    """Start a process whose output goes to `log` (appended), never to a pipe that could fill up."""
    with open(log, "a") as f:
        f.write(f"===== {time.strftime('%H:%M:%S')} start\n")
        f.flush()
        return procs.start(argv, env=env, stdout=f, stderr=f)


def _tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


@pytest.mark.timeout(150)
def test_chaos_kill_and_restart_master_and_slaves(procs, tmp_path, recording):
    module, record, env = recording
    env = {**env, "TM_DELAY": DELAY}
    seed = int(os.environ.get("TM_CHAOS_SEED", "20240611"))
    rng = random.Random(seed)
    address = tcp_address()
    state = tmp_path / "chaos.state"
    failures = tmp_path / "chaos.failures.jsonl"
    master_argv = tm(
        "master",
        module,
        f"n={N}",
        "--address",
        address,
        "--size",
        SIZE,
        "--lease-timeout",
        LEASE,
        "--state-file",
        state,
        "--failures-file",
        failures,
        "--no-progress",
    )
    slave_argv = tm(
        "slave",
        module,
        "--address",
        address,
        "--concurrency",
        CONCURRENCY,
        "--timeout",
        500,
        "--retries",
        20,
        "--no-progress",
    )
    master_log = tmp_path / "master.log"
    slave_logs = [tmp_path / f"slave{k}.log" for k in range(SLAVES)]

    master = _start(procs, master_argv, master_log, env)
    slaves = [_start(procs, slave_argv, log, env) for log in slave_logs]
    watch = ProgressWatch(record)
    events: list[str] = []
    master_kills = slave_kills = 0
    allowance = 0  # repeats the kills so far may cause
    started = time.monotonic()
    chaos_until = started + CHAOS_SECONDS
    deadline = started + 120

    def context() -> str:
        return (
            f"seed {seed}; events: {events[-20:]}\nmaster log:\n{_tail(master_log)}\n"
            f"slave 0 log:\n{_tail(slave_logs[0], 1500)}"
        )

    next_hit = started + rng.uniform(0.5, 1.5)
    while True:
        watch.count()
        code = master.poll()
        if code is not None:
            assert code == 0, f"the master exited with {code} on its own; {context()}"
            break
        now = time.monotonic()
        assert now < deadline, f"the run did not finish in {deadline - started:.0f}s; {context()}"
        if now < chaos_until and now >= next_hit:
            next_hit = now + rng.uniform(0.5, 1.5)
            if rng.random() < MASTER_SHARE:
                allowance += SIZE + watch.handled_in_last(CHECKPOINT_LAG) + SLACK
                procs.kill(master)
                code = master.wait(timeout=10)
                if code == 0:  # it had just finished: nothing to restart
                    events.append(f"{now - started:.1f}s master had finished")
                    break
                master_kills += 1
                events.append(f"{now - started:.1f}s kill master ({watch.samples[-1][1]} handled)")
                master = _start(procs, master_argv, master_log, env)
            else:
                k = rng.randrange(SLAVES)
                allowance += watch.handled_in_last(SLAVE_ACK_LAG) + SLACK
                procs.kill(slaves[k])
                slaves[k].wait(timeout=10)
                slave_kills += 1
                events.append(f"{now - started:.1f}s kill slave {k}")
                slaves[k] = _start(procs, slave_argv, slave_logs[k], env)
        time.sleep(0.05)
    elapsed = time.monotonic() - started

    # The slaves that are still connected hear QUIT and leave; ones that were
    # (re)started too late to hear it are killed at teardown.
    jobs = handled(record)
    counts: dict[int, int] = {}
    for job in jobs:
        counts[job] = counts.get(job, 0) + 1
    failed = set()
    if failures.exists():
        failed = {json.loads(line)["position"] for line in failures.read_text().splitlines() if line.strip()}
    assert set(counts) <= set(range(N)), "handled a job that get_jobs never yielded"
    lost = sorted(set(range(N)) - set(counts) - failed)
    assert not lost, f"{len(lost)} jobs never handled, e.g. {lost[:20]}; {context()}"
    assert not failed, f"jobs in the failures file although no handler raised: {sorted(failed)[:20]}"

    repeats = len(jobs) - len(counts)
    report = (
        f"seed {seed}: {elapsed:.1f}s, {master_kills} master kills, {slave_kills} slave kills, "
        f"{repeats} repeats, allowance {allowance}"
    )
    print(report)
    assert master_kills + slave_kills >= 10, f"too little chaos to prove anything: {report}"
    assert master_kills >= 2, f"the master was hardly killed: {report}"
    assert repeats <= allowance, f"too many jobs handled twice: {report}; {context()}"

    # The final state file records a complete run that counted every job exactly once.
    doc = json.loads(state.read_text())
    assert doc["complete"] is True, doc
    assert doc["finished"] == N, f"state file counts {doc['finished']} finished jobs, not {N}"
    # The same command once more does nothing: the run is over.
    again = procs.run(master_argv, env=env, timeout=30)
    assert again.returncode == 0, again.stderr
    assert "this run already finished" in again.stderr
    assert len(handled(record)) == len(jobs)
