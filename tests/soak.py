"""Soak: run an end-to-end test file (the multi-host one by default) many times in a row, and count.

    python -m tests.soak --runs 50
    python -m tests.soak --runs 20 --minutes 10 -k "master_host_cut_off"
    python -m tests.soak --target tests/e2e/test_reliability.py --runs 10

A fault that shows once in ten runs (a run stuck at 4999 of 5000) is seldom
seen by one run of the suite.  Each run is a fresh ``python -m pytest`` on
TARGET, one test at a time; its outcome is one of

* pass: pytest exited 0 (tests skipped only - no network namespaces here -
  count as "skipped" instead);
* stall: a run that did not end in time - the test's own watch said the
  master is stuck or still running (``tests/e2e/test_multihost.py``), a process
  outlived its deadline, pytest-timeout fired, or the whole run outlived
  ``--run-timeout`` (then it is interrupted, and killed with everything it
  started);
* failure: any other failed test.

One line per run, then the totals and, for each test that did not pass
every time, how often it stalled or failed.  The output of every run that
did not pass is kept in ``--keep`` (a temporary directory by default):
``run-NNN.log``, and ``run-NNN/`` with each test's own files (the master's
and the slaves' logs, the record of jobs handled).
Exit code 0 when every run passed (or was skipped), 1 otherwise, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TARGET = "tests/e2e/test_multihost.py"
# What the tests print when a run does not end: Cluster.finish, Cluster.wait
# and conftest.wait_exit, Procs.run, pytest-timeout.
STALL = re.compile(
    r"the master is stuck at|the master still runs after|still running after|did not finish in|Timeout >"
)
RESULT = re.compile(r"^(PASSED|FAILED|ERROR|SKIPPED)(?: \[\d+\])? (\S+)(.*)$", re.MULTILINE)
SECTION = re.compile(r"^_{3,} (?:ERROR at \w+ of )?(\S+) _{3,}$", re.MULTILINE)  # a failed test's report
ERROR_LINE = re.compile(r"^E +(.*\S)", re.MULTILINE)
INTERRUPT_GRACE = 30.0  # seconds pytest gets to tear down (its fixtures kill what they started) once interrupted


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=positive_int, default=20, help="runs at most (default: %(default)s)")
    parser.add_argument("--minutes", type=positive_float, default=None,
                        help="start no run after this many minutes (default: no limit)")
    parser.add_argument("--target", default=DEFAULT_TARGET, help="test file or node id (default: %(default)s)")
    parser.add_argument("-k", dest="keyword", default=None, help="pytest -k expression: which tests of TARGET")
    parser.add_argument("--run-timeout", type=positive_float, default=600.0,
                        help="seconds a whole run may take before it counts as a stall (default: %(default)s)")
    parser.add_argument("--keep", type=Path, default=None,
                        help="directory for the output of runs that did not pass (default: a temporary one)")
    args = parser.parse_args(argv)
    if not (REPO / args.target.split("::")[0]).exists():
        parser.error(f"no such test file: {args.target}")
    return args


def kill_tree(proc: subprocess.Popen) -> None:
    """Interrupt pytest (its fixtures clean up), then kill whatever is left of it and its descendants."""
    try:
        tree = psutil.Process(proc.pid)
        family = [tree, *tree.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(INTERRUPT_GRACE)
    except subprocess.TimeoutExpired:
        pass
    family += [p for p in _children(tree) if p not in family]
    for process in family:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


def _children(process: psutil.Process) -> list[psutil.Process]:
    try:
        return process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def one_run(args: argparse.Namespace, log: Path, files: Path) -> tuple[str, float, dict[str, str], str]:
    """Run pytest once, its tests' files in `files`: (outcome, seconds, {test: status}, the line that says why)."""
    argv = [sys.executable, "-m", "pytest", args.target, "-n", "0", "-q", "-rA", "-p", "no:cacheprovider",
            "--basetemp", str(files)]
    if args.keyword:
        argv += ["-k", args.keyword]
    began = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            code = proc.wait(args.run_timeout)
            overran = False
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            code, overran = proc.returncode, True
    seconds = time.monotonic() - began
    text = log.read_text(errors="replace")
    tests: dict[str, str] = {}
    reasons: dict[str, str] = {}
    reports = failure_reports(text)
    for status, name, rest in RESULT.findall(text):
        if status in ("FAILED", "ERROR"):
            report = reports.get(name.rsplit("::", 1)[-1], rest)
            tests[name] = "stall" if STALL.search(report) else "failure"
            errors = ERROR_LINE.findall(report)
            said = next((e for e in errors if STALL.search(e)), errors[0] if errors else rest.strip(" -"))
            reasons.setdefault(tests[name], f"{name.rsplit('::', 1)[-1]}: {said}")
        else:
            tests[name] = "pass" if status == "PASSED" else "skipped"
    if overran:
        return "stall", seconds, tests, f"the run outlived --run-timeout {args.run_timeout:g}s"
    for outcome in ("stall", "failure"):
        if outcome in reasons:
            return outcome, seconds, tests, reasons[outcome]
    if code not in (0, 5):  # 5: no test collected (a -k that selects nothing)
        return "failure", seconds, tests, f"pytest exited {code}"
    if not tests or all(status == "skipped" for status in tests.values()):
        return "skipped", seconds, tests, next((ln for ln in text.splitlines() if "SKIPPED" in ln), "no tests")
    return "pass", seconds, tests, ""


def failure_reports(text: str) -> dict[str, str]:
    """Each failed test's report in pytest's output, by the test's name (with its parameters)."""
    marks = list(SECTION.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)]
    return {m.group(1): text[m.end() : end] for m, end in zip(marks, ends, strict=False)}


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    keep = args.keep or Path(tempfile.mkdtemp(prefix="tm-soak-"))
    keep.mkdir(parents=True, exist_ok=True)
    outcomes: Counter[str] = Counter()
    per_test: dict[str, Counter[str]] = {}
    started = time.monotonic()
    print(f"soak: {args.target}{' -k ' + args.keyword if args.keyword else ''}, up to {args.runs} runs; "
          f"output of runs that do not pass in {keep}", flush=True)
    for number in range(1, args.runs + 1):
        if args.minutes is not None and time.monotonic() - started > args.minutes * 60:
            print(f"soak: {args.minutes:g} minutes are up", flush=True)
            break
        log, files = keep / f"run-{number:03d}.log", keep / f"run-{number:03d}"
        outcome, seconds, tests, why = one_run(args, log, files)
        outcomes[outcome] += 1
        for name, status in tests.items():
            per_test.setdefault(name, Counter())[status] += 1
        if outcome in ("pass", "skipped"):
            log.unlink()
            shutil.rmtree(files, ignore_errors=True)
        print(f"run {number}: {outcome} ({seconds:.0f}s){': ' + why[:300] if why else ''}", flush=True)
    runs = sum(outcomes.values())
    print(f"soak: {runs} runs, {outcomes['pass']} passed, {outcomes['stall']} stalled, "
          f"{outcomes['failure']} failed, {outcomes['skipped']} skipped", flush=True)
    for name, counts in sorted(per_test.items()):
        if set(counts) - {"pass", "skipped"}:
            print(f"  {name}: " + ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())), flush=True)
    if not any(keep.iterdir()) and args.keep is None:
        os.rmdir(keep)
    return 0 if outcomes["stall"] + outcomes["failure"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
