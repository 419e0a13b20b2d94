"""Log lines for machines: one JSON object per line (``--log-format json``).

Each object has ``time`` (ISO 8601, UTC), ``level``, ``role`` (master,
slave), ``message`` (the same text as the plain log line) and ``logger``;
a slave's lines also carry its id under ``slave``.  Whatever a log call passes
in ``extra=`` - a slave id, counts, a position - becomes a field of its own,
so a log collector can filter and graph without parsing the message.
"""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}
CORE_KEYS = ("time", "level", "role", "message")


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
