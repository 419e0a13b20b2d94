"""End to end: a failures file left with a partial last line (a crash mid-write) stays usable.

The master appends one JSON line per job failed for good and counts the job
as resolved only once the line is fsynced; a crash (or a full disk) in the
middle of the write leaves a partial last line, with no newline, for a job
that was never counted.  The next record used to be glued to it, and
``--retry-failed`` then refused the whole file ("corrupt at line 3").
"""

from __future__ import annotations

import json

import pytest
from conftest import handled, tm


def run_argv(module, failures, state, *extra) -> list[str]:
    return tm("run", module, 1, "n=10", "--no-progress", "--max-retries", 0,
              "--failures-file", failures, "--state-file", state, *extra)  # fmt: skip


@pytest.mark.timeout(120)
def test_a_partial_last_line_is_cut_before_the_next_record_and_retry_failed_works(procs, tmp_path, recording):
    module, record, env = recording
    failures = tmp_path / "jobs.failures.jsonl"
    failing = {**env, "TM_FAIL_EVERY": "5"}  # jobs 0 and 5 fail

    first = procs.run(run_argv(module, failures, tmp_path / "first.state"), env=failing, timeout=60)
    assert first.returncode == 1, first.stderr[-3000:]
    whole = failures.read_bytes()
    assert whole.count(b"\n") == 2
    failures.write_bytes(whole + whole[:60])  # a third record, cut off by a crash mid-write

    second = procs.run(run_argv(module, failures, tmp_path / "second.state"), env=failing, timeout=60)
    assert second.returncode == 1, second.stderr[-3000:]
    lines = failures.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 5, lines  # the partial line cut, two records appended
    assert [json.loads(line)["position"] for line in lines[:-1]] == [0, 5, 0, 5]

    record.unlink()
    retry = procs.run(run_argv(module, failures, tmp_path / "retry.state", "--retry-failed"), env=env, timeout=60)
    assert retry.returncode == 0, retry.stderr[-3000:]
    assert "corrupt" not in retry.stderr
    assert sorted(handled(record)) == [0, 5]
    assert failures.read_bytes() == b""


@pytest.mark.timeout(60)
def test_retry_failed_skips_a_partial_last_line_with_a_warning(procs, tmp_path, recording):
    module, record, env = recording
    failures = tmp_path / "jobs.failures.jsonl"
    first = procs.run(run_argv(module, failures, tmp_path / "first.state"), env={**env, "TM_FAIL_EVERY": "5"},
                      timeout=60)  # fmt: skip
    assert first.returncode == 1, first.stderr[-3000:]
    whole = failures.read_bytes()
    failures.write_bytes(whole + whole[:60])  # the crash came before the next append

    record.unlink()
    retry = procs.run(run_argv(module, failures, tmp_path / "retry.state", "--retry-failed"), env=env, timeout=60)
    assert retry.returncode == 0, retry.stderr[-3000:]
    warnings = [line for line in retry.stderr.splitlines() if "partial last line" in line]
    assert len(warnings) == 1, retry.stderr[-3000:]
    assert sorted(handled(record)) == [0, 5]
