"""The JSON log formatter: one object per line, core keys, event fields from extra=."""

from __future__ import annotations

import json
import logging
import re
import sys

from taskmaster.logformat import JsonFormatter, iso_time


def record(msg="slave %s joined", args=("s1",), level=logging.INFO, extra=None, exc_info=None) -> logging.LogRecord:
    logger = logging.getLogger("taskmaster.master")
    return logger.makeRecord("taskmaster.master", level, __file__, 1, msg, args, exc_info, extra=extra)


def test_a_line_is_one_json_object_with_the_core_keys():
    line = JsonFormatter("master").format(record())
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "slave s1 joined"
    assert doc["level"] == "info" and doc["role"] == "master" and doc["logger"] == "taskmaster.master"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["time"])


def test_event_fields_from_extra_become_fields():
    doc = json.loads(
        JsonFormatter("master").format(record(extra={"slave": "s1", "pid": 42, "position": 7, "when": object()}))
    )
    assert doc["slave"] == "s1" and doc["pid"] == 42 and doc["position"] == 7
    assert isinstance(doc["when"], str)  # not serialisable: written as text, the line is not lost


def test_fixed_fields_are_on_every_line_and_an_event_cannot_hide_core_keys():
    formatter = JsonFormatter("slave", {"slave": "vm-1-abc"})
    doc = json.loads(formatter.format(record(msg="hello", args=(), extra={"role": "impostor", "time": 0})))
    assert doc["slave"] == "vm-1-abc" and doc["role"] == "slave" and isinstance(doc["time"], str)
    doc = json.loads(formatter.format(record(msg="job", args=(), extra={"slave": "other"})))
    assert doc["slave"] == "other"  # the event's own slave (a master logging about one) wins over the fixed field


def test_a_multi_line_message_and_a_traceback_stay_on_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        exc = sys.exc_info()
    line = JsonFormatter("slave").format(record(msg="job %d failed:\n%s", args=(3, "Traceback..."), exc_info=exc))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["message"] == "job 3 failed:\nTraceback..." and "ValueError: boom" in doc["traceback"]
    assert doc["level"] == "info"


def test_time_is_utc():
    assert iso_time(0.0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1.5) == "1970-01-01T00:00:01.500Z"
