"""How many failures one report of a slave carries: as many as fit in FAILURE_BYTES_PER_REPORT, at least one."""

from __future__ import annotations

from taskmaster.slave.pool import FAILURE_BYTES_PER_REPORT, WorkerPool
from taskmaster.wire import protocol


def pool_with_failures(n: int, traceback_chars: int) -> WorkerPool:
    pool = WorkerPool(lambda job: None, concurrency=1, job_timeout=None)
    for i in range(n):
        pool.failures.append(("run", protocol.Failure(1, i, "ValueError", f"job {i}", "x" * traceback_chars)))
    return pool


def test_small_failures_go_in_one_report():
    pool = pool_with_failures(500, 1000)
    assert len(pool.take_report("run")[1]) == 500  # at 20 a report, a halt waited for 25 of them


def test_large_failures_are_spread_over_reports_and_each_report_stays_within_its_budget():
    pool = pool_with_failures(100, protocol.MAX_TEXT_CHARS)
    sizes = []
    while pool.failures:
        _, failures, _ = pool.take_report("run")
        assert failures
        sizes.append(len(protocol.report("s", "run", "t", 1, 0, [], failures)[1]))
    assert len(sizes) > 1 and max(sizes) <= FAILURE_BYTES_PER_REPORT + 1024
    assert max(sizes) < protocol.MAX_INBOUND_BYTES
