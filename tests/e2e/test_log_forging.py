"""A failure's text cannot forge lines of the text log (issue 23, part 3).

A job's exception message is the job's (and its data's) to choose: it may
hold newlines, a carriage return, terminal escape sequences (ESC, OSC, CSI
as one C1 byte).  In the text log a multi-line message stays one record -
its further lines indented - and every other control character is shown as
an escape, on stderr and in the --log-file alike.  (The JSON log escapes
everything already: tests/unit/test_logformat.py.)
"""

from __future__ import annotations

import re

import pytest
from conftest import tm, write_module

# A message made to pass for the end of the run, retitle the terminal and
# overwrite the line it is on.
FORGED = "2026-12-07 09:00:00,000 INFO master: all 1000 jobs finished"
JOBS = r"""
def get_jobs(last=0, n="1"):
    yield from range(int(last), int(n))

def handle_job(i):
    raise ValueError(
        "boom\n2026-12-07 09:00:00,000 INFO master: all 1000 jobs finished"
        "\x1b]0;pwned\x07\x1b[2K\rerased\x9b31m\u2028new line\x00"
    )
"""
RECORD = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) (master|run|slave \S+): "
)
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def assert_no_forged_line(text: str) -> None:
    assert not RAW_CONTROLS.search(text), repr(RAW_CONTROLS.search(text).group())
    for line in text.splitlines():
        assert RECORD.match(line) or line.startswith(" ") or line.startswith("tm-"), repr(line)
        if FORGED in line:
            assert line.startswith(" "), f"a message forged a record: {line!r}"


@pytest.mark.timeout(60)
def test_a_failure_message_with_controls_stays_one_visible_record(procs, tmp_path):
    module = write_module(tmp_path, "forging", JOBS)
    log = tmp_path / "run.log"
    result = procs.run(tm("run", module, 1, "--no-progress", "--max-retries", "0", "--log-file", log), timeout=50)
    assert result.returncode == 1, result.stderr
    for text in (log.read_text(), result.stderr):
        assert_no_forged_line(text)
        assert FORGED in text, "the message is kept, only made harmless"
        assert r"\x1b]0;pwned\x07\x1b[2K\rerased\x9b31m\u2028new line\x00" in text
    # The slave's record (traceback) and the master's (failed for good) are each one record.
    records = [line for line in log.read_text().splitlines() if RECORD.match(line)]
    assert sum("failed for good" in line for line in records) == 1
