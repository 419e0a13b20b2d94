"""The benchmark's real-work rows: jobs that take time, Taskmaster against Pool(P) and ProcessPoolExecutor(P).

Workloads (``run.py --workloads`` names):

* ``cpu-2ms``, ``cpu-20ms``, ``cpu-200ms`` - pure-Python computation that
  never yields, a fixed number of loops per job (``workloads.handle_cpu``);
* ``lognormal`` - the same with lognormal durations of mean 20 ms (sigma 1),
  drawn per job index, so every run and every system gets the same jobs;
* ``sleep-20ms`` - a blocking ``time.sleep(0.02)``: Taskmaster runs it with
  ``--no-monkey-patch`` (the sleep then blocks the slave, as a C database
  driver would);
* ``db`` - ``examples/migrate_postgres.py`` against a PostgreSQL server that
  the benchmark starts (``benchmarks/postgres.py``); every system runs the
  same ``handle_job`` over the same ranges of the same source table, and the
  target is emptied before every run (untimed).

The loop count of the CPU workloads is calibrated once, here in the
benchmark's parent (``workloads.loops_per_second``), and passed to get_jobs
as ``loops=``: the job is ``(i, loops)``, identical for every system.

Every system runs with its defaults: ``multiprocessing.Pool(P).imap_unordered``
with chunksize 1, ``ProcessPoolExecutor(P).map``, ``tm-run SCRIPT P`` (plus
``--no-monkey-patch`` for sleep-20ms, the one flag the workload needs).
Taskmaster's rows also show each slave's busy time, from the slaves' last
log line (``... N jobs finished, F attempts failed, busy B s of T s``).

This module holds what these rows need beyond ``run.py``'s machinery (which
measures them like any other row): the job specifications, their sizes, the
database's lifetime, the slave log parsing and the Taskmaster / Pool ratios.
Only the standard library is imported here; the database work (filling the
source table, emptying the target) runs in child processes of ``--python``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import workloads

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKLOADS_PY = HERE / "workloads.py"
POSTGRES_PY = HERE / "postgres.py"
MIGRATE_PY = REPO / "examples" / "migrate_postgres.py"

WORKLOADS = ["cpu-2ms", "cpu-20ms", "cpu-200ms", "lognormal", "sleep-20ms", "db"]
SYSTEMS = ["pool-1", "executor", "tm-ipc"]  # the peers: Pool(P) chunksize 1 and the Executor; Taskmaster
CPU_SECONDS = {"cpu-2ms": 0.002, "cpu-20ms": 0.02, "cpu-200ms": 0.2, "lognormal": 0.02}
LOGNORMAL_SIGMA = 1.0

# (N1, N2) jobs.  Full: the large size takes about 10 s on 2 cores at the ideal
# rate (P / job time), the small one about 2 s; quick: about 1 s.  At 10 s the
# fixed costs of a start (Taskmaster's 0.15-0.3 s more than Pool's: three
# processes, gevent, ZeroMQ; with the database, a connection per greenlet) are
# 2-3 % of the whole run; at 7 s they were 3-5 %, the size of the target's
# margin.  The db sizes are in jobs (ranges of the example's chunk of rows):
# the source table holds enough rows for N2.
FULL_SIZES = {
    "cpu-2ms": {"default": (2_000, 10_000)},
    "cpu-20ms": {"default": (200, 1_000)},
    "cpu-200ms": {"default": (20, 100)},
    "lognormal": {"default": (200, 1_000)},
    "sleep-20ms": {"default": (200, 1_000)},
    "db": {"default": (150, 1_000)},
}
QUICK_SIZES = {
    "cpu-2ms": {"default": (200, 800)},
    "cpu-20ms": {"default": (20, 80)},
    "cpu-200ms": {"default": (4, 10)},
    "lognormal": {"default": (20, 80)},
    "sleep-20ms": {"default": (20, 80)},
    "db": {"default": (20, 80)},
}


@dataclass
class JobSpec:
    """What one real-work workload runs: the same script, handler and get_jobs arguments for every system."""

    script: Path
    handler: str
    args: Callable[[int], list[str]]  # get_jobs's key=value arguments for N jobs
    tm_flags: list[str] = field(default_factory=list)  # what the workload needs from tm-run (not tuning)
    before: Callable[[int], None] | None = None  # untimed, before every run of N jobs
    job_seconds: float | None = None  # for the ideal rate, P / job_seconds
    describe: str = ""  # one line for the footnotes


# ----------------------------------------------------------- the slave logs

SLAVE_LINE = re.compile(r"\bslave (\S+): (\d+) jobs finished, (\d+) (?:attempts )?failed"
                        r"(?:, busy ([\d.]+) ?s of ([\d.]+) ?s)?"
                        r"(?:, cpu ([\d.]+) ?s)?\s*$",
                        re.MULTILINE)


def slave_reports(stderr: str) -> list[dict[str, Any]]:
    """Each slave's final log line: jobs finished and failed; busy / total seconds and CPU seconds when it has them."""
    out = []
    for match in SLAVE_LINE.finditer(stderr):
        busy, total, cpu = match.group(4), match.group(5), match.group(6)
        out.append({"slave": match.group(1), "finished": int(match.group(2)), "failed": int(match.group(3)),
                    "busy": float(busy) if busy else None, "of": float(total) if total else None,
                    "cpu": float(cpu) if cpu else None})
    return out


def median_run(runs: list):
    """The successful run of median time among `runs` (the lower of the two middle ones), or None."""
    good = sorted((r for r in runs if r.ok), key=lambda r: r.seconds)
    return good[(len(good) - 1) // 2] if good else None


def slaves_note(runs: list) -> str:
    """'busy 6.8/6.1 s of 7.1 s, cpu 5.2/5.0 s' for the run of median time among `runs` (those at the large size)."""
    run = median_run([r for r in runs if r.slaves])
    if run is None:
        return ""
    slaves = run.slaves
    if all(s["busy"] is not None for s in slaves):
        busy = "/".join(f"{s['busy']:.1f}" for s in slaves)
        note = f"busy {busy} s of {max(s['of'] for s in slaves):.1f} s"
        if all(s.get("cpu") is not None for s in slaves):
            note += ", cpu " + "/".join(f"{s['cpu']:.1f}" for s in slaves) + " s"
        return note
    jobs = "/".join(str(s["finished"]) for s in slaves)
    return f"jobs per slave {jobs} (no busy time in the slave log)"


# ------------------------------------------------------------------ rows


def tm_flags(spec: JobSpec | None) -> list[str]:
    """tm-run's flags besides the defaults, for the setting column (with values, as typed)."""
    return [" ".join(spec.tm_flags)] if spec and spec.tm_flags else []


def decorate(row, runs_large: list, spec: JobSpec | None, processes: int) -> None:
    """The notes of a real-work row: the ideal rate, the CPU its processes spent, for Taskmaster each slave's.

    The CPU is the whole process tree's (tm-run, the master and the slaves;
    Pool's parent and workers), of the run of median time at the large size:
    on a machine whose cores are all busy, a system that spends more CPU on
    the same jobs takes longer.  A database server is not in it.
    """
    notes = []
    if spec and spec.job_seconds:
        notes.append(f"ideal {processes / spec.job_seconds:,.0f} jobs/s")
    run = median_run(runs_large)
    if run and run.cpu_seconds:
        notes.append(f"CPU {run.cpu_seconds:.1f} s")
    if row.key.startswith("tm"):
        notes.append(slaves_note(runs_large))
    row.note = "; ".join(n for n in notes if n)


def paired_ratios(tm, pool) -> tuple[list[float], list[float]]:
    """Taskmaster / Pool for each repetition: (whole runs at N2, steady rates), from runs of the same turn.

    ``interleave`` runs the systems in turns, so repetition k of one and of
    the other ran within seconds of each other: their ratio is untouched by
    the drift of this machine's speed over minutes, which a ratio of two
    medians is not.  A repetition where either system failed is left out.
    """
    whole, steady = [], []
    for t1, t2, p1, p2 in zip(tm.extra.get("seconds1", []), tm.extra.get("seconds2", []),
                              pool.extra.get("seconds1", []), pool.extra.get("seconds2", []), strict=False):
        if t2 and p2:
            whole.append(p2 / t2)  # the same N: a ratio of rates is the inverse ratio of times
            if t1 and p1 and t2 > t1 and p2 > p1:
                steady.append((p2 - p1) / (t2 - t1))
    return whole, steady


def add_pool_ratios(rows: list) -> None:
    """Taskmaster / Pool(P) chunksize 1 on each real-work workload's Taskmaster row: whole run and steady.

    The median over the repetitions of each turn's ratio (``paired_ratios``);
    the note gives their range.  Rows without per-repetition times (an older
    JSON) fall back to the ratio of the medians.
    """
    for workload in WORKLOADS:
        pool = next((r for r in rows if r.workload == workload and r.key == "pool-1"), None)
        for tm in (r for r in rows if r.workload == workload and r.key.startswith("tm")):
            if not pool:
                continue
            whole, steady = paired_ratios(tm, pool)
            if whole:
                tm.vs_pool_whole = statistics.median(whole)
                tm.extra["vs_pool_whole_each"] = whole
                each = f"TM/Pool whole by turn {min(whole):.2f}-{max(whole):.2f}" if len(whole) > 1 else ""
                tm.note = "; ".join(n for n in (tm.note, each) if n)
            elif pool.whole and tm.whole:
                tm.vs_pool_whole = tm.whole / pool.whole
            if steady:
                tm.vs_pool_steady = statistics.median(steady)
                tm.extra["vs_pool_steady_each"] = steady
                tm.vs_pool_noisy = tm.steady_noisy or pool.steady_noisy
            elif pool.steady and tm.steady:
                tm.vs_pool_steady = tm.steady / pool.steady
                tm.vs_pool_noisy = tm.steady_noisy or pool.steady_noisy


# ------------------------------------------------------------- job specs


def cpu_specs(chosen: list[str], loops_per_second: float) -> dict[str, JobSpec]:
    specs = {}
    for name in chosen:
        if name not in CPU_SECONDS:
            continue
        seconds = CPU_SECONDS[name]
        loops = max(1, round(loops_per_second * seconds))
        if name == "lognormal":
            def args(n: int, loops: int = loops) -> list[str]:
                return [f"n={n}", "kind=lognormal", f"loops={loops}", f"sigma={LOGNORMAL_SIGMA:g}"]
            text = (f"lognormal: handle_cpu, loops lognormal per job (seeded with its index), mean {loops:,} "
                    f"(= {seconds * 1000:g} ms), sigma {LOGNORMAL_SIGMA:g}")
        else:
            def args(n: int, loops: int = loops) -> list[str]:
                return [f"n={n}", "kind=cpu", f"loops={loops}"]
            text = f"{name}: handle_cpu, {loops:,} loops of pure Python per job (= {seconds * 1000:g} ms)"
        specs[name] = JobSpec(WORKLOADS_PY, "handle_cpu", args, job_seconds=seconds, describe=text)
    return specs


def sleep_spec() -> JobSpec:
    return JobSpec(WORKLOADS_PY, "handle_sleep", lambda n: [f"n={n}", "kind=sleep"], ["--no-monkey-patch"],
                   job_seconds=workloads.SLEEP_SECONDS,
                   describe=f"sleep-20ms: time.sleep({workloads.SLEEP_SECONDS:g}), blocking everywhere "
                            "(Taskmaster with --no-monkey-patch)")


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Setup(contextlib.ExitStack):
    """Calibrates the CPU workloads and starts the database for the chosen workloads; stops it on exit.

    ``specs`` maps workload name -> JobSpec, ``errors`` a workload that cannot
    run -> why, ``meta`` what goes into the JSON.
    """

    def __init__(self, chosen: list[str], python: str, workdir: Path, sizes: dict[str, dict[str, tuple[int, int]]],
                 say: Callable[[str], None], loops_per_second: float | None = None) -> None:
        super().__init__()
        self.loops_per_second = loops_per_second  # given: the same work as another run (old tree against new)
        self.chosen = [w for w in chosen if w in WORKLOADS]
        self.python, self.workdir, self.sizes, self.say = python, workdir, sizes, say
        self.specs: dict[str, JobSpec] = {}
        self.errors: dict[str, str] = {}
        self.meta: dict[str, Any] = {}

    def __enter__(self) -> Setup:
        super().__enter__()
        try:
            if any(w in CPU_SECONDS for w in self.chosen):
                rate = self.loops_per_second or workloads.loops_per_second()
                self.meta["loops_per_second"] = round(rate)
                self.specs.update(cpu_specs(self.chosen, rate))
                how = "given" if self.loops_per_second else "calibrated"
                self.say(f"{how}: {rate:,.0f} loops/s here, 20 ms = {round(rate * 0.02):,} loops")
            if "sleep-20ms" in self.chosen:
                self.specs["sleep-20ms"] = sleep_spec()
            if "db" in self.chosen:
                try:
                    self.specs["db"] = self._database()
                except Exception as exc:  # reported in the db rows; the other rows still run
                    self.errors["db"] = f"{type(exc).__name__}: {exc}"
                    self.say(f"db: {self.errors['db']}")
        except BaseException:
            self.close()
            raise
        return self

    def footnotes(self) -> list[str]:
        lines = [spec.describe for spec in self.specs.values() if spec.describe]
        lines += [f"{name}: not measured: {error}" for name, error in self.errors.items()]
        return lines

    # -- the database

    def _database(self) -> JobSpec:
        """Start the server; one database per size, its legacy_users holding exactly N jobs' rows."""
        for path in (POSTGRES_PY, MIGRATE_PY):
            if not path.exists():
                raise RuntimeError(f"{path.relative_to(REPO)} does not exist")
        postgres = _load(POSTGRES_PY, "bench_postgres")
        started = time.monotonic()
        with contextlib.ExitStack() as stack:  # the server stops here if the set-up fails
            # No autovacuum: nothing the runs do needs it (the target table is
            # dropped before each run), and its vacuum and analyze of a table
            # of 500,000 rows, about 0.5 s of the server's CPU at a moment set
            # by its 60 s timer, landed in whichever system's run was being
            # timed then.  legacy_users is vacuumed once at set-up instead.
            server = stack.enter_context(postgres.PostgresServer(self.workdir / "postgres",
                                                                 settings={"autovacuum": "off"}))
            sizes = sorted({n for pair in self.sizes["db"].values() for n in pair})
            dsns = {n: server.dsn_for(f"jobs{n}") for n in sizes}
            chunk = self._child(DB_SETUP, str(MIGRATE_PY.parent), server.dsn, *(f"{n}={dsns[n]}" for n in sizes))
            self.push(stack.pop_all())  # else with the benchmark
        self.say(f"db: PostgreSQL up, {', '.join(f'{n} x {chunk.strip()}' for n in sizes)} legacy rows loaded "
                 f"in {time.monotonic() - started:.1f}s")

        def reset(n: int) -> None:
            self._child(DB_RESET, dsns[n], timeout=120)

        self.meta["db"] = {"rows_per_job": int(chunk), "log": str(server.log_path)}
        return JobSpec(MIGRATE_PY, "handle_job", lambda n: [f"dsn={dsns[n]}"], before=reset,
                       describe=f"db: examples/migrate_postgres.py, {int(chunk)} rows per job, on a local "
                                "PostgreSQL (unix socket, fsync off, autovacuum off, the source table vacuumed "
                                "once); one database per size, its target table dropped (and a CHECKPOINT) before "
                                "every run, untimed")

    def _child(self, code: str, *args: str, timeout: float = 600) -> str:
        """Run `code` in a child of --python (which has the database driver); its stdout."""
        proc = subprocess.run([self.python, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.workdir)
        if proc.returncode != 0:
            what = code.splitlines()[0].lstrip("# ")
            last = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
            raise RuntimeError(f"{what}: exit code {proc.returncode}: {last}")
        return proc.stdout


# Children of --python (psycopg2 is the example's driver; this process imports only the standard library).
# The largest database is filled by the example's own setup(); a smaller one is a copy of it (CREATE
# DATABASE ... TEMPLATE) cut to its first N x CHUNK rows: the rows setup() would have made (they are
# generated in order from one seed), several times faster.
DB_SETUP = """# db setup: create and fill one database per size
import sys
sys.path.insert(0, sys.argv[1])
import psycopg2
import migrate_postgres
chunk = migrate_postgres.CHUNK
admin = psycopg2.connect(sys.argv[2])
admin.autocommit = True
sizes = sorted((arg.split("=", 1) for arg in sys.argv[3:]), key=lambda pair: -int(pair[0]))
largest = int(sizes[0][0])
with admin.cursor() as cur:
    cur.execute(f"CREATE DATABASE jobs{largest}")
migrate_postgres.setup(sizes[0][1], largest * chunk)
conn = psycopg2.connect(sizes[0][1])
conn.autocommit = True
with conn.cursor() as cur:
    # Hint bits and the visibility map set now, not by the first timed runs' reads
    # (or by an autovacuum in the middle of one); the copies below inherit them.
    cur.execute("VACUUM ANALYZE legacy_users")
conn.close()
for jobs, dsn in sizes[1:]:
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE jobs{int(jobs)} TEMPLATE jobs{largest}")
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("DELETE FROM legacy_users WHERE id >= (SELECT id FROM legacy_users ORDER BY id OFFSET %s LIMIT 1)",
                    (int(jobs) * chunk,))
        cur.execute("VACUUM ANALYZE legacy_users")
        cur.execute("SELECT count(*) FROM legacy_users")
        assert cur.fetchone()[0] == int(jobs) * chunk
    conn.close()
admin.close()
print(chunk)
"""
DB_RESET = """# db reset: drop the target table
import sys
import psycopg2
conn = psycopg2.connect(sys.argv[1])
conn.autocommit = True
with conn.cursor() as cur:
    cur.execute("DROP TABLE IF EXISTS users")
    cur.execute("CHECKPOINT")
conn.close()
"""

