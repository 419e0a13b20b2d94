"""How log records become lines: JSON objects for machines, safe text for people.

With ``--log-format json``, one JSON object per line.
Each object has ``time`` (ISO 8601, UTC), ``level``, ``role`` (master,
slave), ``message`` (the same text as the plain log line) and ``logger``;
a slave's lines also carry its id under ``slave``.  Whatever a log call passes
in ``extra=`` - a slave id, counts, a position - becomes a field of its own,
so a log collector can filter and graph without parsing the message.

The text format (the default) shows what jobs and their exceptions say, and
they may say anything: `TextFormatter` keeps it from forging records or
driving the terminal that shows the log.

A warning that a peer can make happen again and again (a malformed message,
a refused token) is written the 1st, 10th, 100th and every 1000th time
(``now_and_then``), so that a flood cannot fill the log.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
CORE_KEYS = ("time", "level", "role", "message")


def now_and_then(count: int) -> bool:
    """Is the `count`-th time something happened one to log: the 1st, 10th, 100th, then every 1000th."""
    return count in (1, 10, 100) or count % 1000 == 0


# Every C0 control but tab and newline, DEL, every C1 control (U+0085 NEL and
# U+009B CSI among them), the Unicode line and paragraph separators and the
# bidirectional overrides: what can move the cursor, retitle or reprogram a
# terminal, start a line, or reorder the text a reader sees.
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\r": "\\r"}
CONTINUATION_INDENT = "    "


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def visible_text(text: str) -> str:
    """`text` with its control characters escaped and its further lines indented.

    The indent keeps any line of the text from starting like a record of its
    own (records start with their time), so a message spanning lines - a
    traceback - still reads as one record.
    """
    return _CONTROLS.sub(_escape, text).replace("\n", "\n" + CONTINUATION_INDENT)


class TextFormatter(logging.Formatter):
    """The text log's formatter: a record is its first line plus indented continuation lines, no control character.

    Applied to the whole formatted record, once, so every log call - and the
    traceback appended to it - is covered without escaping at each call site.
    """

    def format(self, record: logging.LogRecord) -> str:
        return visible_text(super().format(record))


def iso_time(created: float) -> str:
    """A record's time as ISO 8601 in UTC, to the millisecond: 2026-12-01T13:10:28.123Z."""
    moment = datetime.datetime.fromtimestamp(created, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def event_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a log call passed with ``extra=``."""
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """Formats each record as one line of JSON; `fields` go into every line (e.g. the slave id)."""

    def __init__(self, role: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.role = role
        self.fields = dict(fields or {})

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "role": self.role,
            "message": record.getMessage(),
            "logger": record.name,
        }
        for key, value in {**self.fields, **event_fields(record)}.items():
            doc.setdefault(key, value)  # an event's field never hides the core ones
        if record.exc_info:
            doc["traceback"] = self.formatException(record.exc_info)
        # default=str: an odd value in `extra` is written as text, never lost with the line.
        return json.dumps(doc, default=str, ensure_ascii=False)
