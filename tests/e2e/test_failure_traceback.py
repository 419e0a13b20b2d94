"""End to end: the traceback in the failures file starts in the user's module."""

from __future__ import annotations

import json

import pytest
from conftest import tm


@pytest.mark.timeout(60)
def test_the_failures_file_traceback_starts_in_the_users_module(procs, tmp_path, recording):
    module, _, env = recording
    failures = tmp_path / "run.failures.jsonl"
    result = procs.run(
        tm("run", module, 1, "n=20", "--no-progress", "--max-retries", "0", "--failures-file", failures),
        env={**env, "TM_FAIL_EVERY": "5"},
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    entries = [json.loads(line) for line in failures.read_text().splitlines()]
    assert len(entries) == 4
    for entry in entries:
        lines = entry["traceback"].splitlines()
        assert lines[0] == "Traceback (most recent call last):", entry["traceback"]
        assert lines[1].startswith(f'  File "{module}", line ') and lines[1].endswith(", in handle_job"), lines
        assert "taskmaster" not in entry["traceback"].replace(str(module.parent), ""), entry["traceback"]
