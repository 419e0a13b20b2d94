"""The benchmark's --quick mode: it runs, exits 0 and prints every row."""

import json

import pytest
from conftest import PYTHON, REPO

SYSTEMS = ["in-process loop", "multiprocessing.Pool", "ProcessPoolExecutor", "taskmaster"]
WORKLOADS = ["noop", "io", "payload", "memory-noop", "memory-payload"]
COLUMNS = ["system", "workload", "setting", "jobs/s whole run", "jobs/s steady", "ratio to TM (steady)", "peak RSS MB"]


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of every data row of the table (header and rule excluded)."""
    lines = [line for line in stdout.splitlines() if " | " in line]
    assert lines, f"no table in the output:\n{stdout}"
    header = [cell.strip() for cell in lines[0].split("|")]
    for column in COLUMNS:
        assert column in header, f"column {column!r} missing from {header}"
    return [[cell.strip() for cell in line.split("|")] for line in lines[1:]]


@pytest.mark.timeout(150)
def test_quick_benchmark_prints_every_row(procs, tmp_path):
    saved = tmp_path / "bench.json"
    result = procs.run([PYTHON, str(REPO / "benchmarks" / "run.py"), "--quick", "--json", str(saved)], timeout=140)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr[-3000:]}"
    assert "FAILED" not in result.stdout, result.stdout

    rows = table_rows(result.stdout)
    present = {(row[0], row[1]) for row in rows}
    for system in SYSTEMS:
        for workload in WORKLOADS:
            assert (system, workload) in present, f"no row for {system} / {workload}:\n{result.stdout}"
    assert ("taskmaster", "scaling") in present
    checkpoint = [row[2] for row in rows if row[:2] == ["taskmaster", "checkpoint"]]
    assert any("every 1 s" in setting for setting in checkpoint), result.stdout
    assert any("never" in setting for setting in checkpoint), result.stdout

    # Both transports of taskmaster, both Pool settings, on every throughput workload.
    for workload in ("noop", "io", "payload"):
        settings = [row[2] for row in rows if row[1] == workload]
        assert any("taskmaster" == row[0] and "ipc" in row[2] for row in rows if row[1] == workload)
        assert any("taskmaster" == row[0] and "tcp" in row[2] for row in rows if row[1] == workload)
        assert any("chunksize=1" in s and "best of" not in s for s in settings), settings
        assert any("best of" in s for s in settings), settings
    # and Taskmaster with its window widened (its counterpart of Pool's tuned chunksize), on noop
    assert any(row[:2] == ["taskmaster", "noop"] and "--size 100,000" in row[2] for row in rows), result.stdout

    # Every throughput row has a whole-run rate and a peak RSS.
    for row in rows:
        if row[1] in ("noop", "io", "payload"):
            assert row[4] not in ("", "-"), row
            assert row[7] not in ("", "-"), row

    doc = json.loads(saved.read_text())
    assert len(doc["rows"]) == len(rows)
    assert not [r for r in doc["rows"] if r["error"]]
    assert all(run["ok"] for run in doc["runs"])
