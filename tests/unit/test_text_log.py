"""The text log's formatter: control characters become escapes, a message's lines stay one record."""

from __future__ import annotations

import logging
import sys

from taskmaster.logformat import TextFormatter


def format_message(msg: str, *args, exc_info=None) -> str:
    record = logging.getLogger("t").makeRecord("t", logging.ERROR, __file__, 1, msg, args, exc_info)
    return TextFormatter("%(levelname)s master: %(message)s").format(record)


def test_plain_text_is_unchanged():
    assert (
        format_message("job %d failed: %s", 3, "tab\there, ümlaut, ✓")
        == "ERROR master: job 3 failed: tab\there, ümlaut, ✓"
    )


def test_every_line_after_the_first_is_indented():
    text = format_message(
        "job %d failed:\n%s", 3, "Traceback (most recent call last):\n  File x\nValueError: a\nERROR master: forged"
    )
    first, *rest = text.split("\n")
    assert first == "ERROR master: job 3 failed:"
    assert rest == [
        "    Traceback (most recent call last):",
        "      File x",
        "    ValueError: a",
        "    ERROR master: forged",
    ]


def test_controls_are_escaped():
    text = format_message("%s", "a\rb\x1b[31mc\x1b]0;t\x07d\x9be\x00f\x7fg\u2028h\u2029i\u202ej\x85k\x0bl\x0cm")
    assert text == r"ERROR master: a\rb\x1b[31mc\x1b]0;t\x07d\x9be\x00f\x7fg\u2028h\u2029i\u202ej\x85k\x0bl\x0cm"
    assert "\n" not in text


def test_a_traceback_is_indented_and_escaped_too():
    try:
        raise ValueError("bad\x1b[2J\nforged line")
    except ValueError:
        exc = sys.exc_info()
    text = format_message("oops", exc_info=exc)
    lines = text.split("\n")
    assert lines[0] == "ERROR master: oops"
    assert all(line.startswith("    ") for line in lines[1:])
    assert r"ValueError: bad\x1b[2J" in text and "    forged line" in lines
