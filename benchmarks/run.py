#!/usr/bin/env python3
"""Taskmaster's benchmark: throughput, start-up and memory against its peers.

    python benchmarks/run.py            # the full benchmark (about 20 minutes on 2 cores)
    python benchmarks/run.py --quick    # every row, small sizes, one repetition (about 1.5 minutes)
    python benchmarks/run.py --json results.json

Every measurement is a fresh process, timed from its start to its exit (so
interpreter start-up, imports and pool or slave start-up are included):

* the in-process loop, ``multiprocessing.Pool`` and ``ProcessPoolExecutor``
  run through ``benchmarks/peers.py``;
* Taskmaster runs as ``python -m taskmaster run benchmarks/workloads.py P ...``
  (tm-run: one master and P slave processes), over its private ipc:// socket
  or over TCP loopback;
* the real-work rows (CPU-bound, blocking and database jobs; ``realwork.py``)
  run Taskmaster, Pool(P) with chunksize 1 and the Executor on the same jobs.

"whole run" is N / (median wall time); "steady state" is (N2 - N1) / (t2 - t1)
for two sizes N1 < N2, which cancels the fixed start-up and shut-down costs.
Peak RSS is that of the process holding the queue: ``ru_maxrss`` of the peer
process (the Pool / Executor parent, or the loop itself), and for Taskmaster
the VmHWM of the master, polled from /proc while it runs.

Only the standard library is used here.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import realwork
from processes import Exec, execute, free_port, kill_everything, on_signal

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKLOADS = HERE / "workloads.py"
PEERS = HERE / "peers.py"
P = os.cpu_count() or 1
IO_CONCURRENCY = 100
IO_SECONDS = 0.01
MB = 1024  # ru_maxrss and VmHWM are in KB

# System keys: (base, variant).  The base names the column "system".
SYSTEM_NAMES = {
    "loop": "in-process loop",
    "pool": "multiprocessing.Pool",
    "executor": "ProcessPoolExecutor",
    "tm": "taskmaster",
}
THROUGHPUT_SYSTEMS = ["loop", "pool-1", "pool-1000", "pool-best", "executor", "tm-ipc", "tm-tcp", "tm-wide"]
NOOP_ONLY = {"pool-1000", "tm-wide"}  # rows of the noop workload alone
WIDE_SIZE = 100_000  # tm-wide: Taskmaster's tuning knob, as the chunksize is Pool's (noop only)
MEMORY_SYSTEMS = ["loop", "pool-best", "executor", "tm-ipc"]
THROUGHPUT_WORKLOADS = ["noop", "io", "payload"]
MEMORY_WORKLOADS = ["memory-noop", "memory-payload"]
ALL_WORKLOADS = THROUGHPUT_WORKLOADS + MEMORY_WORKLOADS + ["scaling", "checkpoint", "rate"] + realwork.WORKLOADS
REALWORK_COMPARED = {"pool-1", "tm-ipc"}  # the real-work targets are their ratios: every turn runs both
NEVER = "1000000000"  # --checkpoint-every that never comes: the "no checkpoint" setting
FAR_ABOVE = "1e9"  # --rate far above what any run reaches: the throttle's cost alone

SUMMARY = re.compile(r"tm-master: (\d+) finished, (\d+) failed in ([\d.]+)s \((\d+) jobs/s\)")


# ------------------------------------------------------------------ the plan


@dataclass
class Plan:
    name: str
    reps: int
    timeout: float  # seconds, per process
    sizes: dict[str, dict[str, tuple[int, int]]]  # workload -> system key or "default" -> (N1, N2)
    scaling: list[int]
    scaling_reps_limit: int  # sizes above this get one repetition
    chunksizes: list[int]
    realwork_reps: int  # the real-work rows: their ratios are what is compared, on a machine whose speed drifts
    realwork_reference_reps: int  # ... of which the Executor, shown for reference only (no target), takes this many

    def pair(self, workload: str, system: str) -> tuple[int, int]:
        table = self.sizes[workload]
        for key in (system, system.split("-")[0], "default"):
            if key in table:
                return table[key]
        raise KeyError((workload, system))


FULL = Plan(
    name="full",
    reps=3,
    timeout=300.0,
    sizes={
        "noop": {"default": (1_000_000, 5_000_000), "pool-1": (40_000, 200_000), "executor": (10_000, 50_000)},
        "io": {"default": (100, 500), "tm": (5_000, 20_000)},
        "payload": {"default": (50_000, 200_000), "pool-1": (20_000, 100_000), "executor": (5_000, 20_000)},
        "memory-noop": {"default": (100_000, 10_000_000)},
        "memory-payload": {"default": (20_000, 2_000_000)},
        **realwork.FULL_SIZES,
    },
    scaling=[10_000, 100_000, 1_000_000, 10_000_000],
    scaling_reps_limit=1_000_000,
    chunksizes=[16, 64, 256, 1024, 4096],
    realwork_reps=7,
    realwork_reference_reps=3,
)

QUICK = Plan(
    name="quick",
    reps=1,
    timeout=60.0,
    # Sizes are shared between rows wherever possible (memory and scaling rows
    # reuse the throughput runs): Taskmaster's start-up dominates a quick run.
    sizes={
        "noop": {"default": (50_000, 200_000), "pool-1": (2_000, 10_000), "executor": (1_000, 5_000)},
        "io": {"default": (20, 100), "tm": (1_000, 4_000)},
        "payload": {"default": (5_000, 20_000), "executor": (1_000, 5_000)},
        "memory-noop": {"default": (50_000, 200_000), "executor": (1_000, 5_000)},
        "memory-payload": {"default": (5_000, 20_000), "executor": (1_000, 5_000)},
        **realwork.QUICK_SIZES,
    },
    scaling=[50_000, 200_000],
    scaling_reps_limit=200_000,
    chunksizes=[16, 256, 4096],
    realwork_reps=1,
    realwork_reference_reps=1,
)


# ------------------------------------------------------------- measurements


@dataclass
class Run:
    system: str  # system key, e.g. tm-ipc or pool-256
    kind: str
    n: int
    seconds: float
    ok: bool
    rss_kb: int  # peak RSS of the queue holder (a lower bound when capped or timed out)
    cpu_seconds: float = 0.0
    error: str = ""
    capped: bool = False
    timed_out: bool = False
    master_rate: float | None = None  # what tm-master reported (its own timer, start-up excluded)
    loadavg: float = 0.0
    leftovers: int = 0
    slaves: list[dict[str, Any]] = field(default_factory=list)  # Taskmaster: each slave's last log line

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0


class Bench:
    def __init__(self, plan: Plan, python: str, workdir: Path, rss_cap_mb: int, tm_path: str | None,
                 log=sys.stderr) -> None:
        self.plan = plan
        self.python = python
        self.workdir = workdir
        self.cap_kb = rss_cap_mb * MB if rss_cap_mb > 0 else None
        self.tm_env = {"PYTHONPATH": os.pathsep.join(filter(None, [tm_path, os.environ.get("PYTHONPATH")]))} \
            if tm_path else {}
        self.log = log
        self.cache: dict[tuple[str, str, int], list[Run]] = {}
        self.runs: list[Run] = []
        self.started = time.monotonic()
        self.counter = 0
        self.best_chunksize: dict[str, int] = {}
        self.sweeps: dict[str, dict[int, float]] = {}
        self.specs: dict[str, realwork.JobSpec] = {}  # real-work workloads: what they run
        self.setup_errors: dict[str, str] = {}  # real-work workloads that could not be set up: why

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", file=self.log, flush=True)

    # -- one process

    def _one(self, system: str, kind: str, n: int, cap: bool) -> Run:
        self.counter += 1
        cwd = self.workdir / f"run-{self.counter:04d}"
        cwd.mkdir()
        cap_kb = self.cap_kb if cap else None
        base, _, variant = system.partition("-")
        spec = self.specs.get(kind)
        try:
            if spec and spec.before:
                spec.before(n)  # untimed (the db: drop the target table)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            run = Run(system, kind, n, 0.0, False, 0, error=f"preparing the run failed: {exc}")
        else:
            if base == "tm":
                run = self._taskmaster(system, variant, kind, n, cwd, cap_kb)
            else:
                argv = [self.python, str(PEERS), base, kind, str(n), "--workers", str(P)]
                if spec:
                    argv += ["--module", str(spec.script), "--handler", spec.handler, *spec.args(n)]
                if base == "pool":
                    argv += ["--chunksize", variant]
                ex = execute(argv, cwd=cwd, timeout=self.plan.timeout, cap_kb=cap_kb)
                run = self._peer_result(system, kind, n, ex)
        shutil.rmtree(cwd, ignore_errors=True)
        run.loadavg = os.getloadavg()[0]
        self.runs.append(run)
        rss = f"{'>' if run.capped or run.timed_out else ''}{run.rss_kb / MB:.0f} MB"
        status = "ok" if run.ok else f"FAILED ({run.error.splitlines()[0] if run.error else '?'})"
        rate = f"{run.rate:>12,.0f}" if run.ok else f"{'-':>12}"
        self.say(f"{system:<13} {kind:<8} n={n:<9} {run.seconds:7.2f}s {rate} jobs/s  {rss:>9}  "
                 f"load {run.loadavg:.1f}  {status}")
        return run

    def _peer_result(self, system: str, kind: str, n: int, ex: Exec) -> Run:
        run = Run(system, kind, n, ex.seconds, False, ex.peak_kb, ex.cpu_seconds, capped=ex.capped,
                  timed_out=ex.timed_out, leftovers=ex.leftovers)
        if ex.capped:
            run.error = f"killed above the RSS cap of {self.cap_kb // MB} MB after {ex.seconds:.0f}s"
        elif ex.timed_out:
            run.error = f"timed out after {self.plan.timeout:g}s"
        else:
            try:
                report = json.loads(ex.stdout.strip().splitlines()[-1])
                run.rss_kb = int(report["maxrss_kb"])
                run.ok = ex.returncode == 0 and report["handled"] == n
                if not run.ok:
                    run.error = f"exit code {ex.returncode}, handled {report['handled']} of {n}"
            except (IndexError, ValueError, KeyError):
                run.error = f"exit code {ex.returncode}, no report; stderr: {ex.stderr[-1500:]}"
        if ex.leftovers:
            run.error += f" ({ex.leftovers} processes left behind, killed)"
        return run

    def _taskmaster(self, system: str, transport: str, kind: str, n: int, cwd: Path, cap_kb: int | None) -> Run:
        spec = self.specs.get(kind)
        for attempt in (1, 2):  # a second try if the free TCP port was taken meanwhile
            job_args = [str(spec.script), str(P), *spec.args(n)] if spec else \
                [str(WORKLOADS), str(P), f"n={n}", f"kind={kind}"]
            argv = [self.python, "-m", "taskmaster", "run", *job_args,
                    "--no-progress", "--reset", "--state-file", str(cwd / "bench.state")]
            if spec:
                argv += ["--handle-job-callback", spec.handler, *spec.tm_flags]
            if kind == "io":
                argv += ["--handle-job-callback", "handle_io", "--concurrency", str(IO_CONCURRENCY)]
            if transport == "tcp":
                argv += ["--address", f"tcp://127.0.0.1:{free_port()}"]
            if transport == "nockpt":  # ipc, with the state file written only at the end
                argv += ["--checkpoint-every", NEVER]
            if transport == "wide":  # ipc, with a wider window: bigger batches
                argv += ["--size", str(WIDE_SIZE)]
            if transport == "rated":  # ipc, with a rate limit it never reaches
                argv += ["--rate", FAR_ABOVE]
            # TMPDIR: tm-run's private ipc directory lands in cwd, removed with it.
            env = {"TMPDIR": str(cwd), **self.tm_env}
            ex = execute(argv, cwd=cwd, timeout=self.plan.timeout, env=env, watch="taskmaster.cli.master|tm-master",
                         cap_kb=cap_kb)
            if not (attempt == 1 and transport == "tcp" and "already in use" in ex.stderr):
                break
        run = Run(system, kind, n, ex.seconds, False, ex.peak_kb, ex.cpu_seconds, capped=ex.capped,
                  timed_out=ex.timed_out, leftovers=ex.leftovers)
        match = SUMMARY.search(ex.stderr)
        if match:
            run.master_rate = float(match.group(4))
        run.slaves = realwork.slave_reports(ex.stderr)
        if ex.capped:
            run.error = f"killed above the RSS cap of {(cap_kb or 0) // MB} MB after {ex.seconds:.0f}s"
        elif ex.timed_out:
            run.error = f"timed out after {self.plan.timeout:g}s; stderr: {ex.stderr[-1500:]}"
        elif ex.returncode != 0 or not match:
            run.error = f"exit code {ex.returncode}; stderr: {ex.stderr[-1500:]}"
        elif int(match.group(1)) != n or int(match.group(2)) != 0:
            run.error = f"{match.group(1)} finished, {match.group(2)} failed of {n}"
        else:
            run.ok = True
        if run.ok and not ex.peak_kb:
            run.ok = False
            run.error = "the master process was never found under tm-run: no peak RSS"
        if ex.leftovers:
            run.error += f" ({ex.leftovers} processes left behind, killed)"
        return run

    # -- repetitions, with a cache: rows share measurements

    def measure(self, system: str, kind: str, n: int, reps: int, cap: bool = False) -> list[Run]:
        runs = self.cache.setdefault((system, kind, n), [])
        while len(runs) < reps:
            run = self._one(system, kind, n, cap)
            runs.append(run)
            if not run.ok:
                break  # no point repeating a failure
        return runs

    def measure_pair(self, system: str, kind: str, n1: int, n2: int, reps: int, cap: bool = False):
        """Interleaved repetitions of the two sizes (so slow drift hits both alike)."""
        for rep in range(1, reps + 1):
            a = self.measure(system, kind, n1, rep, cap)
            b = self.measure(system, kind, n2, rep, cap)
            if not (a[-1].ok and b[-1].ok):
                break
        return self.cache[(system, kind, n1)], self.cache[(system, kind, n2)]

    def tune_chunksize(self, kind: str) -> int:
        """The fastest Pool chunksize for this workload, tried at the small size, once each."""
        if kind in self.best_chunksize:
            return self.best_chunksize[kind]
        n1, _ = self.plan.pair(kind, "pool-best")
        candidates = [c for c in self.plan.chunksizes if c <= max(1, n1 // (4 * P))] or [1]
        times: dict[int, float] = {}
        for c in candidates:
            run = self.measure(f"pool-{c}", kind, n1, 1)[0]
            if run.ok:
                times[c] = run.seconds
        best = min(times, key=times.get) if times else candidates[0]
        self.best_chunksize[kind] = best
        self.sweeps[kind] = times
        return best


# ---------------------------------------------------------------------- rows


@dataclass
class Row:
    system: str
    workload: str
    setting: str
    sizes: str
    whole: float | None = None
    steady: float | None = None
    steady_noisy: bool = False  # t2 - t1 too small against the noise: shown with "~"
    ratio: float | None = None
    ratio_noisy: bool = False
    rss_mb: float | None = None
    rss_text: str = ""
    note: str = ""
    error: str = ""
    key: str = ""  # system key (tm-ipc, pool-best...)
    extra: dict[str, Any] = field(default_factory=dict)
    vs_pool_whole: float | None = None  # real-work Taskmaster rows: its rate / Pool(P) chunksize 1's
    vs_pool_steady: float | None = None
    vs_pool_noisy: bool = False


NOISE_SECONDS = 0.25


def set_steady(row: Row, n1: int, t1: float | None, n2: int, t2: float | None) -> None:
    """(N2 - N1) / (t2 - t1), flagged when t2 - t1 is too short to trust."""
    if t1 and t2 and t2 > t1:
        row.steady = (n2 - n1) / (t2 - t1)
        row.steady_noisy = t2 - t1 < max(NOISE_SECONDS, 0.1 * t1)


def median_seconds(runs: list[Run]) -> float | None:
    good = [r.seconds for r in runs if r.ok]
    return statistics.median(good) if good and len(good) == len(runs) else None


def short(n: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if n >= scale and n % (scale // 10) == 0:
            value = n / scale
            return f"{value:g}{unit}"
    return str(n)


def first_error(runs: list[Run]) -> str:
    for r in runs:
        if not r.ok:
            return r.error or "failed"
    return ""


def setting_for(key: str, kind: str, bench: Bench) -> str:
    if key == "loop":
        return "1 process"
    if key == "pool-1":
        return f"P={P}, imap_unordered chunksize=1"
    if key == "pool-1000":
        return f"P={P}, imap_unordered chunksize=1000 (the no-op reference of issue 10)"
    if key == "pool-best":
        tried = ",".join(str(c) for c in sorted(bench.sweeps.get(kind, {}))) or "-"
        return f"P={P}, imap_unordered chunksize={bench.best_chunksize.get(kind, '?')} (best of {tried})"
    if key == "executor":
        return f"P={P}, map (chunksize=1)"
    transport = key.split("-")[1]
    concurrency = IO_CONCURRENCY if kind == "io" else 10
    if kind in realwork.WORKLOADS:
        return ", ".join([f"P={P} slaves, {transport}, defaults", *realwork.tm_flags(bench.specs.get(kind))])
    if transport == "nockpt":
        return f"P={P} slaves, ipc, concurrency {concurrency}, checkpoint never (only at the end)"
    if transport == "wide":
        return f"P={P} slaves, ipc, concurrency {concurrency}, --size {WIDE_SIZE:,}"
    if transport == "rated":
        return f"P={P} slaves, ipc, concurrency {concurrency}, --rate {FAR_ABOVE} (far above what it reaches)"
    return f"P={P} slaves, {transport}, concurrency {concurrency}"


def system_key_for_runs(key: str, kind: str, bench: Bench) -> str:
    if key == "pool-best":
        return f"pool-{bench.tune_chunksize(kind)}"
    return key


def throughput_row(bench: Bench, key: str, kind: str) -> Row:
    n1, n2 = bench.plan.pair(kind, key)
    run_key = system_key_for_runs(key, kind, bench)
    row = Row(SYSTEM_NAMES[key.split("-")[0]], kind, setting_for(key, kind, bench), f"{short(n1)}/{short(n2)}",
              key=key)
    runs1, runs2 = bench.measure_pair(run_key, kind, n1, n2, bench.plan.reps)
    row.error = first_error(runs1 + runs2)
    t1, t2 = median_seconds(runs1), median_seconds(runs2)
    if t2:
        row.whole = n2 / t2
        row.rss_mb = statistics.median(r.rss_kb for r in runs2) / MB
        row.rss_text = f"{row.rss_mb:.0f}"
    set_steady(row, n1, t1, n2, t2)
    if kind == "io" and key.startswith("tm"):
        row.note = f"ideal {P * IO_CONCURRENCY / IO_SECONDS:,.0f} jobs/s (P x concurrency / 10 ms)"
    elif kind == "io" and key != "loop":
        row.note = f"unfair: blocking sleep, ideal {P / IO_SECONDS:,.0f} jobs/s (P / 10 ms)"
    elif kind == "io":
        row.note = f"ideal {1 / IO_SECONDS:,.0f} jobs/s"
    elif kind in realwork.WORKLOADS:
        realwork.decorate(row, runs2, bench.specs.get(kind), P)
    row.extra = {"t1": t1, "t2": t2, "n1": n1, "n2": n2, "run_key": run_key,
                 "master_rate": [r.master_rate for r in runs2 if r.master_rate],
                 # by repetition: the real-work ratios pair the systems' runs of the same turn
                 "seconds1": [r.seconds if r.ok else None for r in runs1],
                 "seconds2": [r.seconds if r.ok else None for r in runs2]}
    return row


def memory_row(bench: Bench, key: str, workload: str) -> Row:
    kind = workload.split("-", 1)[1]
    small, large = bench.plan.pair(workload, key)
    run_key = system_key_for_runs(key, kind, bench)
    setting = setting_for(key, kind, bench)
    if key == "executor":
        setting += ", drains the iterator up front"
    row = Row(SYSTEM_NAMES[key.split("-")[0]], workload, setting, f"{short(small)}/{short(large)}", key=key)
    reps = 1
    runs1 = bench.measure(run_key, kind, small, reps, cap=True)
    runs2 = bench.measure(run_key, kind, large, reps, cap=True)
    a, b = runs1[-1], runs2[-1]
    t1, t2 = median_seconds(runs1), median_seconds(runs2)
    if t2:
        row.whole = large / t2
    set_steady(row, small, t1, large, t2)
    limit_b = b.capped or b.timed_out
    if a.rss_kb and b.rss_kb:
        ratio = b.rss_kb / a.rss_kb
        row.rss_mb = b.rss_kb / MB
        row.rss_text = (f"{a.rss_kb / MB:.0f} -> {'>' if limit_b else ''}{b.rss_kb / MB:.0f} "
                        f"(x{'>' if limit_b else ''}{ratio:.2f})")
    if b.capped:
        row.note = f"large run killed at the {bench.cap_kb // MB} MB RSS cap after {b.seconds:.0f}s"
    elif b.timed_out:
        row.note = f"large run stopped at the {bench.plan.timeout:.0f}s time limit"
    else:
        row.error = first_error(runs1 + runs2)
    if not a.ok and not row.error:
        row.error = a.error
    row.extra = {"small": small, "large": large, "rss_small_kb": a.rss_kb, "rss_large_kb": b.rss_kb,
                 "large_limited": limit_b, "run_key": run_key}
    return row


def scaling_rows(bench: Bench) -> list[Row]:
    rows = []
    previous: tuple[int, float] | None = None
    for n in bench.plan.scaling:
        reps = bench.plan.reps if n <= bench.plan.scaling_reps_limit else 1
        runs = bench.measure("tm-ipc", "noop", n, reps)
        t = median_seconds(runs)
        row = Row(SYSTEM_NAMES["tm"], "scaling", f"P={P} slaves, ipc, noop, {len(runs)} run(s)", short(n),
                  key="tm-ipc", error=first_error(runs))
        if t:
            row.whole = n / t
            row.rss_mb = statistics.median(r.rss_kb for r in runs) / MB
            row.rss_text = f"{row.rss_mb:.0f}"
            if previous:
                set_steady(row, previous[0], previous[1], n, t)
                row.note = f"steady from {short(previous[0])} to {short(n)}" if row.steady else \
                    f"t({short(n)}) <= t({short(previous[0])}): start-up and noise dominate"
            previous = (n, t)
        else:
            previous = None
        row.extra = {"n": n, "t": t, "master_rate": [r.master_rate for r in runs if r.master_rate]}
        rows.append(row)
    return rows


def checkpoint_rows(bench: Bench) -> list[Row]:
    """noop with the checkpoint written every second (the default) and never: the cost of the checkpoint."""
    every, never = throughput_row(bench, "tm-ipc", "noop"), throughput_row(bench, "tm-nockpt", "noop")
    for row in (every, never):
        row.workload = "checkpoint"
    every.setting += ", checkpoint every 1 s"
    if every.steady and never.steady:
        every.note = f"steady {every.steady / never.steady:.2f} x the rate without checkpoints"
    return [every, never]


def rate_rows(bench: Bench) -> list[Row]:
    """noop without --rate and with --rate far above what it reaches: the cost of the throttle (issue: under 5 %)."""
    free, rated = throughput_row(bench, "tm-ipc", "noop"), throughput_row(bench, "tm-rated", "noop")
    for row in (free, rated):
        row.workload = "rate"
    free.setting += ", no --rate"
    if free.steady and rated.steady:
        rated.note = f"steady {rated.steady / free.steady:.2f} x the rate without --rate"
    return [free, rated]


def add_ratios(rows: list[Row]) -> None:
    workloads = THROUGHPUT_WORKLOADS + realwork.WORKLOADS
    base = {r.workload: r for r in rows if r.key == "tm-ipc" and r.workload in workloads}
    for r in rows:
        tm = base.get(r.workload)
        if r.workload in workloads and r.steady and tm and tm.steady:
            r.ratio = r.steady / tm.steady
            r.ratio_noisy = r.steady_noisy or tm.steady_noisy
    realwork.add_pool_ratios(rows)


# ------------------------------------------------------------------ output


HEADERS = ["system", "workload", "setting", "N (small/large)", "jobs/s whole run", "jobs/s steady",
           "ratio to TM (steady)", "TM/Pool cs=1 (whole, steady)", "peak RSS MB", "notes"]


def cells(row: Row) -> list[str]:
    def rate(x: float | None) -> str:
        return f"{x:,.0f}" if x else "-"

    notes = row.note
    if row.error:
        notes = ("FAILED: " + row.error.splitlines()[0][:100]) + (f"; {notes}" if notes else "")
    steady = ("~" if row.steady_noisy else "") + rate(row.steady)
    vs_pool = "-"
    if row.vs_pool_whole or row.vs_pool_steady:
        vs_pool = (f"x{row.vs_pool_whole:.2f}" if row.vs_pool_whole else "-") + ", " + \
            (f"{'~' if row.vs_pool_noisy else ''}x{row.vs_pool_steady:.2f}" if row.vs_pool_steady else "-")
    return [row.system, row.workload, row.setting, row.sizes, rate(row.whole), steady,
            f"{'~' if row.ratio_noisy else ''}x{row.ratio:.2f}" if row.ratio else "-", vs_pool, row.rss_text or "-",
            notes]


def render(rows: list[Row]) -> str:
    table = [HEADERS] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS))]
    right = {3, 4, 5, 6, 7, 8}
    out = []
    for k, line in enumerate(table):
        out.append(" | ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in
                              enumerate(zip(line, widths, strict=True))).rstrip())
        if k == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def git_info() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {"head": git("rev-parse", "--short", "HEAD"), "dirty": git("status", "--porcelain", "--", "taskmaster")}


def taskmaster_location(python: str, env: dict[str, str]) -> str:
    try:
        proc = subprocess.run([python, "-c", "import taskmaster; print(taskmaster.__file__)"], capture_output=True,
                              text=True, timeout=60, env={**os.environ, **env}, cwd=tempfile.gettempdir())
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"? ({exc})"
    return proc.stdout.strip() or f"? ({proc.stderr.strip()[-200:]})"


# ---------------------------------------------------------------------- main


def build_rows(bench: Bench, systems: list[str], workloads: list[str]) -> list[Row]:
    rows: list[Row] = []
    for kind in THROUGHPUT_WORKLOADS:
        if kind in workloads:
            for key in THROUGHPUT_SYSTEMS:
                if key in systems and (key not in NOOP_ONLY or kind == "noop"):
                    rows.append(throughput_row(bench, key, kind))
    for workload in MEMORY_WORKLOADS:
        if workload in workloads:
            for key in MEMORY_SYSTEMS:
                if key in systems:
                    rows.append(memory_row(bench, key, workload))
    if "scaling" in workloads and "tm-ipc" in systems:
        rows += scaling_rows(bench)
    if "checkpoint" in workloads and "tm-ipc" in systems:
        rows += checkpoint_rows(bench)
    if "rate" in workloads and "tm-ipc" in systems:
        rows += rate_rows(bench)
    for workload in realwork.WORKLOADS:
        if workload in workloads:
            keys = [key for key in realwork.SYSTEMS if key in systems]
            if workload in bench.specs:
                interleave(bench, keys, workload)
            for key in keys:
                rows.append(realwork_row(bench, key, workload))
    add_ratios(rows)
    return rows


def interleave(bench: Bench, keys: list[str], kind: str) -> None:
    """Measure the systems taking turns, repetition by repetition (the rows then read these runs).

    This machine's speed drifts by 10-20 % over minutes (shared hosts): run
    one system's repetitions after another's and the drift lands in their
    ratio.  Taking turns spreads it over all of them alike, and the order
    turns too (A B C, then B C A, ...), so that no system always runs first
    or always right after another.  The systems without a target (the
    Executor) take only the first ``realwork_reference_reps`` turns.
    """
    for rep in range(1, bench.plan.realwork_reps + 1):
        turn = [key for key in keys if key in REALWORK_COMPARED or rep <= bench.plan.realwork_reference_reps]
        shift = (rep - 1) % len(turn)
        for key in turn[shift:] + turn[:shift]:
            n1, n2 = bench.plan.pair(kind, key)
            run_key = system_key_for_runs(key, kind, bench)
            bench.measure(run_key, kind, n1, rep)
            bench.measure(run_key, kind, n2, rep)


def realwork_row(bench: Bench, key: str, workload: str) -> Row:
    if workload in bench.specs:
        return throughput_row(bench, key, workload)
    n1, n2 = bench.plan.pair(workload, key)
    return Row(SYSTEM_NAMES[key.split("-")[0]], workload, setting_for(key, workload, bench),
               f"{short(n1)}/{short(n2)}", key=key, error=bench.setup_errors.get(workload, "not set up"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark Taskmaster against its peers; prints one table.")
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition: every row in about 1.5 "
                                                             "minutes")
    parser.add_argument("--json", metavar="PATH", help="also save the rows and every run as JSON")
    parser.add_argument("--reps", type=int, help="repetitions per size (default: 3 and 5 for the real-work rows, "
                                                 "--quick: 1)")
    parser.add_argument("--timeout", type=float, help="seconds any one process may run (default: 300, --quick: 60)")
    parser.add_argument("--rss-cap-mb", type=int, default=2048,
                        help="memory rows: kill a run whose queue holder grows past this (default 2048; 0: no cap)")
    parser.add_argument("--systems", help=f"comma list of {','.join(THROUGHPUT_SYSTEMS)} (default: all)")
    parser.add_argument("--workloads", help=f"comma list of {','.join(ALL_WORKLOADS)} (default: all)")
    parser.add_argument("--python", default=sys.executable,
                        help="interpreter with taskmaster installed (default: this one)")
    parser.add_argument("--loops-per-second", type=float, metavar="N",
                        help="CPU rows: use this calibration (printed by an earlier run) instead of measuring one, so "
                             "that two runs - e.g. old tree and new - do exactly the same work")
    parser.add_argument("--taskmaster", metavar="DIR",
                        help="benchmark the taskmaster package found in DIR (prepended to PYTHONPATH), e.g. an "
                             "export of another commit")
    args = parser.parse_args(argv)
    for name, allowed in (("systems", THROUGHPUT_SYSTEMS), ("workloads", ALL_WORKLOADS)):
        value = getattr(args, name)
        chosen = allowed if not value else [v.strip() for v in value.split(",") if v.strip()]
        unknown = set(chosen) - set(allowed)
        if unknown:
            parser.error(f"unknown {name}: {', '.join(sorted(unknown))}")
        setattr(args, name, chosen)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = QUICK if args.quick else FULL
    plan = Plan(**{**asdict(base), "reps": args.reps or base.reps, "timeout": args.timeout or base.timeout,
                   "realwork_reps": args.reps or base.realwork_reps,
                   "realwork_reference_reps": args.reps or base.realwork_reference_reps})
    plan.sizes = {k: {s: tuple(v) for s, v in d.items()} for k, d in plan.sizes.items()}  # type: ignore[misc]
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="tm-bench-"))
    tm_path = os.path.abspath(args.taskmaster) if args.taskmaster else None
    bench = Bench(plan, args.python, workdir, args.rss_cap_mb, tm_path)
    meta = {
        "plan": plan.name,
        "reps": plan.reps,
        "realwork_reps": plan.realwork_reps,
        "realwork_reference_reps": plan.realwork_reference_reps,
        "cpu_count": P,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "taskmaster": taskmaster_location(args.python, bench.tm_env),
        "git": git_info(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "loadavg_start": os.getloadavg(),
    }
    bench.say(f"{plan.name} benchmark, P={P}, {plan.reps} repetition(s) ({plan.realwork_reps} for real work, "
              f"{plan.realwork_reference_reps} for its Executor rows), taskmaster from {meta['taskmaster']}, "
              f"git {meta['git']['head']}{' (taskmaster/ modified)' if meta['git']['dirty'] else ''}")
    rows: list[Row] = []
    footnotes: list[str] = []
    interrupted = False
    try:
        # Calibration and the database server, for the real-work rows; the server stops on the way out.
        chosen = args.workloads if set(args.systems) & set(realwork.SYSTEMS) else []
        with realwork.Setup(chosen, args.python, workdir, plan.sizes, bench.say, args.loops_per_second) as setup:
            bench.specs, bench.setup_errors, footnotes = setup.specs, setup.errors, setup.footnotes()
            meta["realwork"] = setup.meta
            rows = build_rows(bench, args.systems, args.workloads)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        kill_everything()
        shutil.rmtree(workdir, ignore_errors=True)
    if interrupted:
        print("interrupted: no table (every process started was stopped)", file=sys.stderr)
        return 130
    meta["loadavg_end"] = os.getloadavg()
    meta["seconds"] = round(time.monotonic() - bench.started, 1)
    print(f"Taskmaster benchmark ({plan.name}): P = os.cpu_count() = {P}, Python {meta['python']}, "
          f"{plan.reps} repetition(s) per size (median; real-work rows {plan.realwork_reps}, "
          f"their Executor {plan.realwork_reference_reps}), "
          f"git {meta['git']['head']}"
          f"{' + uncommitted changes in taskmaster/' if meta['git']['dirty'] else ''}, "
          f"load average {meta['loadavg_start'][0]:.1f} -> {meta['loadavg_end'][0]:.1f}, {meta['seconds']:.0f}s")
    print(render(rows))
    print()
    print("whole run = N(large) / median wall time of the whole process (start-up and shut-down included); "
          f"steady = (N2-N1)/(t2-t1); ~ marks t2-t1 < max({NOISE_SECONDS}s, 10% of t1): within the noise.")
    print("peak RSS = the process holding the queue (master / Pool or Executor parent / the loop), at N(large); "
          "memory rows: small -> large (ratio large/small).")
    if any(r.workload == "io" for r in rows):
        print(f"io: Taskmaster slaves run 10 ms gevent sleeps {IO_CONCURRENCY} at a time; Pool/Executor workers "
              "block in time.sleep (unfair to them, reported for reference).")
    if any(r.workload.startswith("memory") for r in rows):
        print("memory rows: one run per size; multiprocessing.Pool uses the chunksize found best for that payload; "
              f"runs are killed past --rss-cap-mb {args.rss_cap_mb} (shown as '>').")
    if any(r.workload in realwork.WORKLOADS for r in rows):
        print("real-work rows: every system with its defaults; TM/Pool = Taskmaster's rate / Pool(P) chunksize 1's, "
              "for each turn (the two ran within seconds of each other), median over the turns; "
              "busy = each slave's time with a job running, of its longest run time (the slaves' last log lines; "
              "run of median time at N2).")
        for line in footnotes:
            print(f"  {line}")
    failed = [r for r in rows if r.error]
    if args.json:
        doc = {"meta": meta, "plan": asdict(plan), "rows": [asdict(r) for r in rows],
               "chunksize_sweeps": bench.sweeps, "runs": [asdict(r) for r in bench.runs]}
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
