"""Visible runs: tm-status, ETA from count_jobs or --total, progress lines, logs, the Python API."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import (
    handled,
    start_logged,
    tail,
    tcp_address,
    text,
    tm,
    wait_exit,
    wait_for,
    wait_listening,
    write_module,
)

COUNTED = """
import os, time

def get_jobs(last=0, n="400", **kwargs):
    for i in range(int(last), int(n)):
        yield i

def count_jobs(n="400", **kwargs):
    return int(n)

def handle_job(i):
    time.sleep(float(os.environ.get("TM_DELAY", "0.02")))
"""


def status(procs, address: str, *extra: str) -> subprocess.CompletedProcess:
    return procs.run(tm("status", "--address", address, "--timeout", "1500", *extra), timeout=30)


def snapshot(procs, address: str) -> dict | None:
    result = status(procs, address, "--json")
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.mark.timeout(90)
def test_tm_status_reports_a_running_master_and_eta_from_count_jobs(procs, tmp_path):
    module = write_module(tmp_path, "counted", COUNTED)
    address = tcp_address()
    mlog = tmp_path / "master.log"
    master = start_logged(procs, tm("master", module, "n=400", "--address", address, "--no-progress"), mlog)
    wait_listening(master, mlog)
    slave = start_logged(
        procs, tm("slave", module, "--address", address, "--concurrency", "4", "--no-progress"), tmp_path / "slave.log"
    )

    snap = wait_for(lambda: (s := snapshot(procs, address)) and s["finished"] >= 20 and s, 30, what="progress")
    assert snap["state"] in ("running", "draining")
    assert snap["total"] == 400 and 0 < snap["percent"] < 100
    assert snap["eta_seconds"] is not None and snap["eta_seconds"] > 0
    assert snap["rate_10s"] > 0 and snap["rate_overall"] > 0
    # No --size: the master's own window, 10,000 jobs, stretched for jobs that pickle small.
    assert snap["size_explicit"] is False and snap["size"] in (10000, 160000) and snap["in_flight"] > 0
    assert snap["state_file"].endswith(".state")
    [row] = snap["slaves"]
    assert row["pid"] == slave.pid and row["state"] == "working" and row["finished"] > 0

    human = status(procs, address)
    assert human.returncode == 0, human.stderr
    for label in ("target", "state", "finished", "failed", "in flight", "buffered", "rate", "eta", "state file"):
        assert re.search(rf"^{label}\s", human.stdout, re.M), f"no {label!r} line:\n{human.stdout}"
    assert "of 400 (" in human.stdout and str(slave.pid) in human.stdout

    assert wait_exit(master, 60, mlog) == 0, tail(mlog)
    assert wait_exit(slave, 30, tmp_path / "slave.log") == 0
    state = json.loads(next(tmp_path.glob("*.state")).read_text())
    assert state["total"] == 400 and state["complete"]


def test_tm_status_without_a_master_exits_3(procs):
    result = procs.run(tm("status", "--address", tcp_address(), "--timeout", "300"), timeout=30)
    assert result.returncode == 3
    assert "no master answered" in result.stderr and result.stdout == ""


@pytest.mark.timeout(90)
def test_progress_lines_carry_percent_and_eta_with_total_and_start_from_jobs_done(procs, tmp_path, recording):
    """--total gives percent and ETA; on resume the count starts from the jobs already done."""
    module, record, env = recording
    env = {**env, "TM_DELAY": "0.01"}
    address = tcp_address()
    argv = tm("master", module, "n=4000", "--address", address, "--total", "4000")
    mlog = tmp_path / "master.log"
    master = start_logged(procs, argv, mlog, env)
    start_logged(
        procs,
        tm(
            "slave",
            module,
            "--address",
            address,
            "--no-progress",
            "--concurrency",
            "5",
            "--timeout",
            "500",
            "--retries",
            "40",
        ),
        tmp_path / "slave.log",
        env,
    )
    wait_for(lambda: len(handled(record)) >= 300 and list(tmp_path.glob("*.state")), 60, what="some progress")
    master.send_signal(2)  # SIGINT: stop, save, resume later
    assert wait_exit(master, 30, mlog) == 130, tail(mlog)
    done_before = json.loads(next(tmp_path.glob("*.state")).read_text())["finished"]
    assert done_before >= 300

    mlog2 = tmp_path / "master2.log"
    master = start_logged(procs, argv, mlog2, env)
    start_logged(
        procs,
        tm("slave", module, "--address", address, "--no-progress", "--concurrency", "2"),
        tmp_path / "slave2.log",
        env,
    )
    # stderr is a file, not a terminal: plain lines, no control characters, every ten seconds.
    lines = wait_for(
        lambda: re.findall(r"master: completed (\d+) \(([\d.]+)%\).* eta ", text(mlog2)),
        45,
        what="a progress line with percent and eta",
    )
    completed, percent = int(lines[0][0]), float(lines[0][1])
    assert completed >= done_before, "progress after a resume must start from the jobs already done"
    assert abs(percent - 100.0 * completed / 4000) < 1.0
    assert "\r" not in text(mlog2) and "\x1b" not in text(mlog2)
    master.send_signal(2)
    assert wait_exit(master, 30, mlog2) == 130, tail(mlog2)


@pytest.mark.timeout(60)
def test_log_file_lines_carry_time_role_level_and_the_summary(procs, tmp_path, recording):
    module, record, env = recording
    log_file = tmp_path / "run.log"
    result = procs.run(tm("run", module, 2, "n=300", "--no-progress", "--log-file", log_file), env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = log_file.read_text().splitlines()
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (INFO|WARNING|ERROR|DEBUG) "
    assert all(re.match(stamp + r"(master|slave \S+): ", line) for line in lines), lines[:5]
    assert any(re.match(stamp + r"master: ", line) for line in lines)
    assert any(re.match(stamp + r"slave \S+: ", line) for line in lines)
    [summary] = [line for line in lines if "summary: " in line]
    assert "300 finished, 0 failed" in summary and ".state" in summary


@pytest.mark.timeout(60)
def test_python_api_runs_a_job_and_returns_its_result(procs, tmp_path, recording):
    module, record, env = recording
    code = (
        "import json, taskmaster\n"
        f"r = taskmaster.run({str(module)!r}, processes=2, job_args={{'n': 700}}, size=500, concurrency=3)\n"
        "print(json.dumps([r.exit_code, r.finished, r.failed, r.duration, r.ok]))\n"
        f"again = taskmaster.run({str(module)!r}, processes=1, job_args={{'n': 700}})\n"
        "print(json.dumps([again.exit_code, again.finished, 'already finished' in again.summary]))\n"
    )
    result = procs.run([sys.executable, "-c", code], env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines()[-2:])
    exit_code, finished, failed, duration, ok = first
    assert (exit_code, finished, failed, ok) == (0, 700, 0, True) and duration > 0
    assert second == [0, 0, True]  # same arguments, same state file: nothing to do
    assert sorted(handled(record)) == list(range(700))
