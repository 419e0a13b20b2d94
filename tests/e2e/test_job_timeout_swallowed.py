"""--job-timeout ends a job whose handler swallows exceptions in a retry loop.

A handler that retries on ``except Exception:`` used to swallow JobTimeout
too and never end: the run hung with the job "running".  Here one job
retries around a call that yields (the timer's path) and one around a loop
that never yields (the watchdog signal's path); both must fail with
JobTimeout, be recorded in the failures file, and the run must end.
"""

from __future__ import annotations

import json

import pytest
from conftest import tm, write_module

RETRYING_JOBS = '''
import time


def get_jobs(last=0, n="4"):
    yield from range(int(last), int(n))


def _spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def handle_job(i):
    if i == 0:
        while True:  # retries for ever around a call that yields
            try:
                time.sleep(0.05)
            except Exception:
                pass
    if i == 1:
        while True:  # retries for ever around a loop that never yields
            try:
                _spin(0.05)
            except Exception:
                pass
'''


@pytest.mark.timeout(90)
def test_a_handler_that_swallows_exceptions_still_times_out_and_the_run_ends(procs, tmp_path):
    module = write_module(tmp_path, "retrying", RETRYING_JOBS)
    failures = tmp_path / "run.failures.jsonl"
    result = procs.run(
        tm("run", module, 1, "n=4", "--no-progress", "--max-retries", 0, "--job-timeout", 0.2,
           "--failures-file", failures),
        timeout=45,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]  # 1: jobs failed for good
    entries = [json.loads(line) for line in failures.read_text().splitlines()]
    assert {e["position"]: e["type"] for e in entries} == {0: "JobTimeout", 1: "JobTimeout"}
    assert "2 finished, 2 failed" in result.stderr, result.stderr[-3000:]
