#!/usr/bin/env python3
"""Where a Taskmaster run spends its time, per job, in the master and in the slaves.

    python benchmarks/profile_run.py                       # CPU time per job, 2M noop jobs
    python benchmarks/profile_run.py --cprofile --top 25   # plus the top functions, per job
    python benchmarks/profile_run.py --kind payload --n 200000

Starts the master and P slaves itself (``python -m taskmaster.cli.master`` /
``python -m taskmaster.cli.slave``, as tm-run would, on a private ipc://
socket), each optionally under cProfile, reaps each with ``wait4`` and prints
the CPU seconds of every process and the microseconds of CPU per job.  With
--cprofile, the slaves' profiles are merged; ``per job`` columns divide by the
number of jobs.  By default cProfile counts the CPU time of the main thread
(``time.thread_time``), so time spent waiting in the hub costs nothing; with
--clock wall it counts elapsed time instead.  cProfile itself slows the
processes down (2-3x for these tiny functions) and attributes time loosely
across greenlet switches: trust the call counts and the order, and take
absolute CPU per job from a run without --cprofile.  Stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import pstats
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from processes import kill_session  # noqa: E402
from run import IO_CONCURRENCY, SUMMARY, WORKLOADS, P  # noqa: E402

# Runs `python -m MODULE ARGS` under cProfile with the chosen clock, dumping the
# stats at exit (the commands end with sys.exit).
PROFILED = """
import cProfile, runpy, sys, time
out, clock, module = sys.argv[1:4]
sys.argv = [module] + sys.argv[4:]
profile = cProfile.Profile(time.thread_time if clock == "thread" else time.perf_counter)
profile.enable()
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    profile.disable()
    profile.dump_stats(out)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2_000_000, help="jobs (default 2,000,000)")
    parser.add_argument("--kind", choices=("noop", "io", "payload"), default="noop")
    parser.add_argument("--slaves", type=int, default=P, help=f"slave processes (default {P})")
    parser.add_argument("--cprofile", action="store_true", help="run every process under cProfile")
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread",
                        help="cProfile's timer: CPU time of the main thread (default; waiting costs nothing) or wall")
    parser.add_argument("--top", type=int, default=20, help="functions to list per role (default 20)")
    parser.add_argument("--out", help="keep the .prof files in this directory")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before everything is killed")
    parser.add_argument("--taskmaster", metavar="DIR", help="import taskmaster from DIR (prepended to PYTHONPATH)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="tm-prof-"))
    try:
        return profile(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the .prof files, if kept, are in --out


def profile(args: argparse.Namespace, work: Path) -> int:
    out = Path(args.out).resolve() if args.out else work
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.taskmaster:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.abspath(args.taskmaster), env.get("PYTHONPATH")]))
    sock = work / "m.sock"
    address = f"ipc://{sock}"

    def command(role: str, module: str, *rest: str) -> list[str]:
        if args.cprofile:
            return [sys.executable, "-c", PROFILED, str(out / f"{role}.prof"), args.clock, module, *rest]
        return [sys.executable, "-m", module, *rest]

    master_argv = command("master", "taskmaster.cli.master", str(WORKLOADS), f"n={args.n}", f"kind={args.kind}",
                          "--address", address, "--state-file", str(work / "state"), "--reset", "--no-progress")
    handler = "handle_io" if args.kind == "io" else "handle_job"
    slave_rest = [f"{WORKLOADS}:{handler}", "--address", address, "--no-progress"]
    if args.kind == "io":
        slave_rest += ["--concurrency", str(IO_CONCURRENCY)]

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    procs: dict[str, subprocess.Popen] = {}
    usage: dict[str, tuple[float, float, int]] = {}
    logs = {}
    try:
        started = time.monotonic()
        logs["master"] = open(work / "master.err", "w+b")  # noqa: SIM115 - closed below
        procs["master"] = subprocess.Popen(master_argv, cwd=work, env=env, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=logs["master"], start_new_session=True)
        deadline = started + args.timeout
        while not sock.exists():  # like tm-run: slaves once the master listens
            if procs["master"].poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the master did not start:\n{(work / 'master.err').read_text()[-2000:]}")
            time.sleep(0.01)
        listening = time.monotonic()
        for i in range(args.slaves):
            name = f"slave-{i + 1}"
            logs[name] = open(work / f"{name}.err", "w+b")  # noqa: SIM115 - closed below
            procs[name] = subprocess.Popen(command(name, "taskmaster.cli.slave", *slave_rest), cwd=work, env=env,
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logs[name],
                                           start_new_session=True)
        ended: dict[str, float] = {}
        while len(usage) < len(procs):
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out after {args.timeout:g}s")
            for name, proc in procs.items():
                if name in usage:
                    continue
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    usage[name] = (ru.ru_utime, ru.ru_stime, ru.ru_maxrss)
                    ended[name] = time.monotonic()
            time.sleep(0.005)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for proc in procs.values():
            kill_session(proc.pid, grace=1.0)
            with contextlib.suppress(Exception):
                proc.wait(timeout=5)
        for f in logs.values():
            f.close()

    master_err = (work / "master.err").read_text(errors="replace")
    match = SUMMARY.search(master_err)
    n = args.n
    print(f"taskmaster {args.kind}: {n:,} jobs, {args.slaves} slaves"
          f"{', under cProfile' if args.cprofile else ''}; master listening after {listening - started:.2f}s, "
          f"master exited after {ended['master'] - started:.2f}s, "
          f"last process after {max(ended.values()) - started:.2f}s")
    if match:
        print(f"master says: {match.group(0)}")
    else:
        print(f"master did not report success; its stderr:\n{master_err[-2000:]}")
    print(f"{'process':<10} {'exit':>4} {'user s':>8} {'sys s':>7} {'CPU us/job':>10} {'peak RSS MB':>11}")
    for name, (user, system, maxrss) in usage.items():
        print(f"{name:<10} {procs[name].returncode:>4} {user:>8.2f} {system:>7.2f} {(user + system) / n * 1e6:>10.2f} "
              f"{maxrss / 1024:>11.0f}")
    slaves_cpu = sum(u + s for name, (u, s, _) in usage.items() if name != "master")
    print(f"{'slaves':<10} {'':>4} {'':>8} {'':>7} {slaves_cpu / n * 1e6:>10.2f}")

    if args.cprofile:
        for role, files in (("master", ["master.prof"]),
                            ("slaves", [f"slave-{i + 1}.prof" for i in range(args.slaves)])):
            paths = [str(out / f) for f in files if (out / f).exists()]
            if not paths:
                print(f"\n{role}: no profile written")
                continue
            print(f"\n{role}: top {args.top} functions by own time (tottime), per job over {n:,} jobs")
            print(top_functions(paths, n, args.top))
    return 0 if match else 1


def top_functions(paths: list[str], n: int, top: int) -> str:
    stats = pstats.Stats(paths[0], stream=io.StringIO())
    for path in paths[1:]:
        stats.add(path)
    rows = []
    total = 0.0
    for (filename, line, func), (_cc, ncalls, tottime, cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        rows.append((tottime, cumtime, ncalls, f"{short_path(filename)}:{line}({func})"))
    rows.sort(reverse=True)
    lines = [f"  total own time {total:.2f}s = {total / n * 1e6:.2f} us/job",
             f"  {'own us/job':>10} {'cum us/job':>10} {'calls/job':>10}  function"]
    for tottime, cumtime, ncalls, name in rows[:top]:
        lines.append(f"  {tottime / n * 1e6:>10.3f} {cumtime / n * 1e6:>10.3f} {ncalls / n:>10.4f}  {name}")
    return "\n".join(lines)


def short_path(filename: str) -> str:
    return re.sub(r"^.*/(site-packages|lib/python3\.\d+)/", "", filename).replace(str(Path.cwd()) + "/", "")


if __name__ == "__main__":
    sys.exit(main())
