#!/usr/bin/env python3
"""Fan-out: throughput as slave processes are added to one master.

    python benchmarks/fanout.py            # 1, 2, 4, 8, 16, 32 slaves (a few minutes on 2 cores)
    python benchmarks/fanout.py --quick    # 1, 2, 4, 8 slaves, fewer jobs (under a minute)
    python benchmarks/fanout.py --steps 1,4,16 --jobs-per-slave 50000 --json out.json

Every step is one fresh master (``python -m taskmaster master``) on TCP
loopback and one ``python -m taskmaster spawn`` of P slaves, each with
``--concurrency 50``, running the I/O-bound handler of
``benchmarks/workloads.py`` (``time.sleep(0.01)``, cooperative in a slave).
The slaves are started first and the master only once all of them are up
and waiting for it, so that the measurement is the fan-out and not the
start-up of P interpreters.  With perfect fan-out P slaves run
P x 50 / 0.01 s = P x 5,000 jobs/s; the table shows how close each step gets.

Columns:

* seconds    - the run: from the master's bind (slaves joining included) to
               its last job finished, by the master's own clock as
               ``tm-status`` reports it (polled, more often near the end:
               to within about 10 ms).  The duration in the master's summary
               and ``--result-file`` is longer, as it includes the time the
               master stays up after the run to tell its slaves to quit
               (``--linger``, at least 0.5 s); it is used only if the status
               cannot be asked (taskmaster not importable here);
* jobs/s     - jobs / seconds;
* % ideal    - jobs/s against P x concurrency / delay;
* master CPU - user + system seconds the master process spent serving the
               run (``wait4`` rusage, exact, less its CPU when it started
               listening: interpreter start-up and imports, ~0.2 s, shown
               apart; the linger after the run, mostly idle, is included),
               in all and per 1,000 jobs;
* all CPU    - the same for master, ``tm-spawn`` and every slave together,
               start-up included (~0.3 s per interpreter; this process's
               RUSAGE_CHILDREN before and after the step).

On a machine with few cores the master and the slaves share them: once the
slaves' CPU (all CPU - master CPU) fills the cores, adding slaves adds no
throughput.  The master's CPU per 1,000 jobs is what a dedicated master
host needs: 1 / (master CPU s per job) is the most jobs/s one master core
serves.

With ``--tail`` it measures the end of a run instead: each slave runs one
job at a time (``--concurrency 1 --no-monkey-patch``), every job blocks for
200 ms (``time.sleep``, a real block, like a C driver), and each job writes
its slave's pid and end time to a log.  The columns are then when the first
slave ran dry (its last job ended while others still had work), when the last
one finished, and the spread between the two in job durations: jobs handed
out but not started move to a slave that runs dry, so the spread should stay
within two job durations at any number of slaves.

Standard library only, plus ``taskmaster.cli.status.ask`` (pyzmq) to poll
the master's status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "workloads.py"
CONCURRENCY = 50
DELAY = 0.01  # workloads.IO_SECONDS
FULL_STEPS = [1, 2, 4, 8, 16, 32]
QUICK_STEPS = [1, 2, 4, 8]
TAIL_STEPS = [8, 32]
TAIL_SECONDS = 0.2  # one --tail job
TAIL_JOBS_PER_SLAVE = 10
WAITING = re.compile(r"WARNING slave (\S+): master at .* \(try \d+ of ")


@dataclass
class Step:
    slaves: int
    jobs: int
    seconds: float = 0.0
    rate: float = 0.0
    ideal: float = 0.0
    master_cpu: float = 0.0  # serving the run: from its bind to its exit
    master_startup_cpu: float = 0.0  # interpreter, imports, loading the module, binding
    all_cpu: float = 0.0
    error: str = ""
    first_dry: float = 0.0  # --tail: seconds from the first job's start to the first slave's last job end
    last_done: float = 0.0  # ... and to the last slave's last job end

    @property
    def master_cpu_per_1000(self) -> float:
        return 1000 * self.master_cpu / self.jobs if self.jobs else float("nan")

    @property
    def all_cpu_per_1000(self) -> float:
        return 1000 * self.all_cpu / self.jobs if self.jobs else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_members(sid: int) -> list[int]:
    """Processes of session `sid` (all started by this script: the spawn and its slaves)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid:
                out.append(int(entry))
    return out


def kill_session(proc: subprocess.Popen) -> None:
    for pid in [proc.pid, *session_members(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_rusage(proc: subprocess.Popen, timeout: float) -> tuple[int, float]:
    """Reap `proc` with wait4: (exit code, user + system CPU seconds), or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.02)


def process_cpu(pid: int) -> float:
    """user + system CPU seconds of a running process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class EndWatch(threading.Thread):
    """Polls the master's status; `seconds` becomes its elapsed time when all jobs are finished."""

    def __init__(self, address: str, jobs: int) -> None:
        super().__init__(daemon=True)
        self.address, self.jobs = address, jobs
        self.seconds: float | None = None
        self.stopped = threading.Event()
        try:
            from taskmaster.cli.status import ask
        except ImportError:
            ask = None
        self.ask = ask
        self.keys = None
        try:  # since the default per-user secret, the master answers only a client that has it
            from taskmaster.wire.security import keys_for

            self.keys = keys_for(None, False, address)
        except ImportError:
            pass

    def run(self) -> None:
        last: tuple[float, int] | None = None
        while self.ask is not None and not self.stopped.is_set():
            try:
                snapshot = self.ask(self.address, 500, self.keys) if self.keys else self.ask(self.address, 500)
            except Exception:  # the master is not up yet, or gone
                snapshot = None
            interval = 0.1
            if snapshot:
                elapsed, finished = float(snapshot["elapsed"]), int(snapshot.get("finished", 0))
                if finished >= self.jobs:
                    self.seconds = elapsed
                    return
                if last is not None and finished > last[1] and elapsed > last[0]:
                    # Poll rarely (each answer costs the master a little CPU), often near the end.
                    left = (self.jobs - finished) * (elapsed - last[0]) / (finished - last[1])
                    interval = min(0.1, max(0.005, left / 4))
                last = (elapsed, finished)
            self.stopped.wait(interval)


def get_tail_jobs(last=0, n="100", **kwargs):
    """--tail jobs: 0 .. n-1."""
    yield from range(int(last), int(n))


def handle_tail(i: int) -> None:
    """--tail: block for TAIL_SECONDS, then log "pid start end" with one write."""
    started = time.time()
    time.sleep(TAIL_SECONDS)
    fd = os.open(os.environ["TM_FANOUT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{os.getpid()} {started:.6f} {time.time():.6f}\n".encode())
    finally:
        os.close(fd)


def tail_spread(log: Path, step: Step) -> None:
    """First slave dry and last slave done, from the --tail job log."""
    last_end: dict[str, float] = {}
    first_start = float("inf")
    for line in log.read_text().splitlines():
        pid, start, end = line.split()
        first_start = min(first_start, float(start))
        last_end[pid] = max(last_end.get(pid, 0.0), float(end))
    if len(last_end) < step.slaves:
        raise RuntimeError(f"only {len(last_end)} of {step.slaves} slaves ran a job")
    step.first_dry = min(last_end.values()) - first_start
    step.last_done = max(last_end.values()) - first_start


def run_step(python: str, slaves: int, jobs: int, workdir: Path, timeout: float, tail: bool = False) -> Step:
    concurrency = 1 if tail else CONCURRENCY
    step = Step(slaves, jobs, ideal=slaves * concurrency / (TAIL_SECONDS if tail else DELAY))
    job_log = workdir / f"jobs-{slaves}.log"
    env = dict(os.environ, TM_FANOUT_LOG=str(job_log))
    if tail:
        handler, source, extra = f"{HERE / 'fanout.py'}:handle_tail", f"{HERE / 'fanout.py'}:get_tail_jobs", []
        slave_flags = ["--no-monkey-patch"]
    else:
        handler, source, extra = f"{WORKLOADS}:handle_io", str(WORKLOADS), ["kind=io"]
        slave_flags = []
    address = f"tcp://127.0.0.1:{free_port()}"
    spawn_log, master_log = workdir / f"spawn-{slaves}.log", workdir / f"master-{slaves}.log"
    result_file = workdir / f"result-{slaves}.json"
    cpu_before = children_cpu()
    spawn = master = None
    try:
        with open(spawn_log, "w") as log:
            spawn = subprocess.Popen(
                [python, "-m", "taskmaster", "spawn", handler, str(slaves), "--address", address,
                 "--concurrency", str(concurrency), "--timeout", "1000", "--retries", "120", "--no-progress",
                 *slave_flags],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, cwd=workdir, env=env,
            )
        deadline = time.monotonic() + timeout
        while len(set(WAITING.findall(spawn_log.read_text(errors="replace")))) < slaves:
            if spawn.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the slaves did not all start:\n{spawn_log.read_text()[-2000:]}")
            time.sleep(0.1)
        with open(master_log, "w") as log:
            master = subprocess.Popen(
                [python, "-m", "taskmaster", "master", source, f"n={jobs}", *extra, "--address", address,
                 "--state-file", str(workdir / f"run-{slaves}.state"), "--reset", "--no-progress",
                 "--result-file", str(result_file)],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True, cwd=workdir,
            )
        # Its CPU once it listens (interpreter start-up and imports done) - before
        # the slaves waiting for it can join, polled often enough to be close.
        while "listening on" not in master_log.read_text(errors="replace"):
            if master.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the master did not start:\n{master_log.read_text()[-2000:]}")
            time.sleep(0.002)
        step.master_startup_cpu = process_cpu(master.pid)
        watch = EndWatch(address, jobs)
        watch.start()
        try:
            code, master_total = wait_rusage(master, max(1.0, deadline - time.monotonic()))
        finally:
            watch.stopped.set()
            watch.join(5)
        step.master_cpu = master_total - step.master_startup_cpu
        if code != 0:
            raise RuntimeError(f"the master exited {code}:\n{master_log.read_text()[-2000:]}")
        spawn_code, _ = wait_rusage(spawn, 60)
        if spawn_code != 0:
            raise RuntimeError(f"tm-spawn exited {spawn_code}:\n{spawn_log.read_text()[-2000:]}")
        result = json.loads(result_file.read_text())
        if result["finished"] != jobs:
            raise RuntimeError(f"{result['finished']} of {jobs} jobs finished")
        step.seconds = watch.seconds if watch.seconds else result["duration"]
        step.rate = jobs / step.seconds
        step.all_cpu = children_cpu() - cpu_before
        if tail:
            tail_spread(job_log, step)
    except (RuntimeError, TimeoutError, OSError, ValueError, KeyError) as exc:
        step.error = str(exc) or f"timed out after {timeout:.0f}s"
    finally:
        for proc in (master, spawn):
            if proc is not None and proc.returncode is None:
                kill_session(proc)
                with contextlib.suppress(ChildProcessError):
                    wait_rusage(proc, 10)
    return step


HEADER = ("slaves", "greenlets", "jobs", "seconds", "jobs/s", "ideal jobs/s", "% ideal",
          "master start-up CPU s", "master CPU s", "master CPU s/1000 jobs", "all CPU s/1000 jobs")


TAIL_HEADER = ("slaves", "jobs", "seconds", "% ideal", "first slave dry s", "last slave done s", "spread (jobs)")


def render_tail(steps: list[Step]) -> str:
    rows = [TAIL_HEADER]
    for s in steps:
        if s.error:
            rows.append((str(s.slaves), str(s.jobs), "FAILED", *["-"] * 4))
            continue
        rows.append((
            str(s.slaves),
            str(s.jobs),
            f"{s.seconds:.2f}",
            f"{100 * s.rate / s.ideal:.0f}",
            f"{s.first_dry:.2f}",
            f"{s.last_done:.2f}",
            f"{(s.last_done - s.first_dry) / TAIL_SECONDS:.1f}",
        ))
    return _table(rows)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(steps: list[Step]) -> str:
    rows = [HEADER]
    for s in steps:
        if s.error:
            rows.append((str(s.slaves), str(s.slaves * CONCURRENCY), str(s.jobs), "FAILED", *["-"] * 7))
            continue
        rows.append((
            str(s.slaves),
            str(s.slaves * CONCURRENCY),
            str(s.jobs),
            f"{s.seconds:.2f}",
            f"{s.rate:.0f}",
            f"{s.ideal:.0f}",
            f"{100 * s.rate / s.ideal:.0f}",
            f"{s.master_startup_cpu:.2f}",
            f"{s.master_cpu:.2f}",
            f"{s.master_cpu_per_1000:.3f}",
            f"{s.all_cpu_per_1000:.3f}",
        ))
    return _table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1, 2, 4, 8 slaves and fewer jobs")
    parser.add_argument("--tail", action="store_true", help="the end of a run: 200 ms blocking jobs, 8 and 32 slaves")
    parser.add_argument("--steps", help="comma-separated slave counts (default 1,2,4,8,16,32)")
    parser.add_argument("--jobs-per-slave", type=int, help="jobs per slave process in each step")
    parser.add_argument("--max-jobs", type=int, default=400_000, help="cap on the jobs of one step")
    parser.add_argument("--timeout", type=float, default=300, help="seconds allowed for one step")
    parser.add_argument("--python", default=sys.executable, help="interpreter with taskmaster installed")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the logs (their directory is printed)")
    args = parser.parse_args(argv)

    default_steps = TAIL_STEPS if args.tail else QUICK_STEPS if args.quick else FULL_STEPS
    steps = [int(x) for x in args.steps.split(",")] if args.steps else default_steps
    per_slave = args.jobs_per_slave or (TAIL_JOBS_PER_SLAVE if args.tail else 5_000 if args.quick else 20_000)
    workdir = Path(tempfile.mkdtemp(prefix="tm-fanout-"))
    if args.tail:
        print(f"tail: 1 job at a time per slave, each blocks {TAIL_SECONDS * 1000:.0f} ms (--no-monkey-patch), "
              f"TCP loopback, {os.cpu_count()} CPUs", flush=True)
    else:
        print(f"fan-out: {CONCURRENCY} greenlets per slave, handler sleeps {DELAY * 1000:.0f} ms, TCP loopback, "
              f"{os.cpu_count()} CPUs", flush=True)
    results = []
    try:
        for slaves in steps:
            jobs = min(args.max_jobs, per_slave * slaves)
            step = run_step(args.python, slaves, jobs, workdir, args.timeout, args.tail)
            results.append(step)
            status = f"FAILED: {step.error}" if step.error else f"{step.rate:.0f} jobs/s"
            print(f"  {slaves} slaves, {jobs} jobs: {status}", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"logs in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(render_tail(results) if args.tail else render(results))
    if args.json:
        doc = [dict(asdict(s), master_cpu_per_1000=s.master_cpu_per_1000, all_cpu_per_1000=s.all_cpu_per_1000)
               for s in results]
        Path(args.json).write_text(json.dumps({"concurrency": CONCURRENCY, "delay": DELAY, "steps": doc}, indent=1))
    return 1 if any(s.error for s in results) else 0


if __name__ == "__main__":
    sys.exit(main())
