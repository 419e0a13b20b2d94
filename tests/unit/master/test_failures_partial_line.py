"""The failures file after a crash mid-append, in-process: the partial last line, and only it, is let go."""

from __future__ import annotations

import pytest

from taskmaster.errors import UsageError
from taskmaster.master import failures_file as failures


def entry(position: int) -> dict:
    record = failures.record(position, f"job {position}", "ValueError", "bad row", "Traceback ...", 1, "s-1")
    # A fixed time: the expected bytes are built apart from the appended
    # entry, and a second may tick between the two.
    return {**record, "time": "2026-12-07T12:00:00+0000"}


def whole_lines(*positions: int) -> bytes:
    return b"".join(failures._encode(entry(p)) for p in positions)


@pytest.mark.parametrize("chunk", [7, 64 * 1024], ids=["read-back-in-small-chunks", "read-back-at-once"])
def test_the_first_append_cuts_a_partial_last_line_at_its_start(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(failures, "READ_BACK_BYTES", chunk)
    path = tmp_path / "f.jsonl"
    good = whole_lines(1, 2)
    path.write_bytes(good + whole_lines(3)[:50])
    log = failures.FailureLog(str(path))
    log.append(entry(4))
    log.close()
    assert path.read_bytes() == good + whole_lines(4)
    assert [e["position"] for e in log.read()] == [1, 2, 4]


def test_a_file_that_is_only_a_partial_line_is_emptied_first(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(whole_lines(3)[:50])
    log = failures.FailureLog(str(path))
    log.append(entry(4))
    log.close()
    assert path.read_bytes() == whole_lines(4)


def test_read_skips_a_partial_last_line_with_one_warning_and_leaves_the_file_alone(tmp_path, caplog):
    path = tmp_path / "f.jsonl"
    path.write_bytes(whole_lines(1, 2) + whole_lines(3)[:50])
    before = path.read_bytes()
    assert [e["position"] for e in failures.FailureLog(str(path)).read()] == [1, 2]
    assert [r.getMessage() for r in caplog.records if "partial last line" in r.getMessage()] != []
    assert len(caplog.records) == 1
    assert path.read_bytes() == before


def test_damage_before_the_last_line_is_still_refused(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(whole_lines(1) + b"not json\n" + whole_lines(3) + whole_lines(4)[:50])
    with pytest.raises(UsageError, match="is corrupt at line 2 "):
        failures.FailureLog(str(path)).read()
