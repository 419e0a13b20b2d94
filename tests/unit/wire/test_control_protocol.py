"""The CONTROL message of tm-ctl, in-process: what the master accepts, and what it refuses."""

from __future__ import annotations

import json

import pytest

from taskmaster.wire import protocol
from taskmaster.wire.protocol import ProtocolError, decode_from_slave


def control(doc) -> list[bytes]:
    return [protocol.CONTROL, json.dumps(doc, allow_nan=True).encode()]


@pytest.mark.parametrize(
    "command, rate", [("pause", None), ("resume", None), ("stop", None), ("rate", 200.0), ("rate", None)]
)
def test_every_command_decodes_to_what_was_encoded(command, rate):
    request = decode_from_slave(protocol.control_request(command, rate, 1500))
    assert request == protocol.ControlRequest(command, rate, 1500)


def test_an_integer_rate_is_a_rate():
    assert decode_from_slave(control({"command": "rate", "rate": 7, "timeout_ms": 10})).rate == 7.0


@pytest.mark.parametrize(
    "doc, reason",
    [
        ({"command": "halt", "timeout_ms": 10}, "'command' must be one of pause, resume, rate, stop"),
        ({"command": None, "timeout_ms": 10}, "'command'"),
        ({"timeout_ms": 10}, "'command'"),
        ({"command": "rate", "rate": 0, "timeout_ms": 10}, "'rate'"),
        ({"command": "rate", "rate": -1, "timeout_ms": 10}, "'rate'"),
        ({"command": "rate", "rate": 1e13, "timeout_ms": 10}, "'rate'"),
        ({"command": "rate", "rate": float("nan"), "timeout_ms": 10}, "'rate'"),
        ({"command": "rate", "rate": float("inf"), "timeout_ms": 10}, "'rate'"),
        ({"command": "rate", "rate": "200", "timeout_ms": 10}, "'rate'"),
        ({"command": "rate", "rate": True, "timeout_ms": 10}, "'rate'"),
        ({"command": "pause"}, "'timeout_ms'"),
        ({"command": "pause", "timeout_ms": 0}, "'timeout_ms'"),
        ({"command": "pause", "timeout_ms": 1.5}, "'timeout_ms'"),
    ],
)
def test_malformed_commands_are_refused_with_a_reason(doc, reason):
    with pytest.raises(ProtocolError, match=reason):
        decode_from_slave(control(doc))


def test_the_answer_is_json_only():
    kind, raw = protocol.control_reply({"ok": False, "error": "refused"})
    assert kind == protocol.CONTROL and json.loads(raw) == {"ok": False, "error": "refused"}
