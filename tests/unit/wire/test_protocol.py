"""The wire format, in-process: what a slave may send, and what the master refuses.

The malformed inputs are the fuzz test's (tests/e2e/test_fuzz.py) as a table, so
every one of them is checked on every run, in milliseconds, with the reason
the master gives; the fuzz test still throws them at a real master.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmaster.wire import protocol
from taskmaster.wire.protocol import ProtocolError, decode_from_slave

WEIRD = [
    None, True, False, -1, -(2**63), 2**62 + 1, 2**64, 10**400, 1.5, 1e308, "", "x" * 300, "é\u0000\ud7ff",
    [], {}, [[]], [[1]], {"a": 1}, [-1, 2], [2, 1], [0, 0], [[0, 2**70]],
]  # fmt: skip

BAD_ACKS = [
    [[-1, [[0, 1]]]],
    [[1, [[5, 2]]]],
    [[1, [[-5, 3]]]],
    [[1, [[0, 2**70]]]],
    [[1, [[0, 1, 2]]]],
    [[1, "x"]],
    [[1.0, [[0, 1]]]],
    [[True, [[0, 1]]]],
    [[1, [[0, 1]]]] * 10_001,
    [[1, [[i, i + 1] for i in range(0, 200_002, 2)]]],
    {"not": "a list"},
]
BAD_FAILURES = [
    [{"batch": 1, "position": -1, "type": "E", "message": "", "traceback": ""}],
    [{"batch": 1, "position": 0, "type": "E" * 70_000, "message": "", "traceback": ""}],
    [{"batch": 1}],
    ["failure"],
    {"not": "a list"},
]


def body(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


def good_request(**changes) -> dict:
    doc = {"slave": "s-1", "run": "r", "token": "t", "seq": 1, "want": 5, "acks": [], "failures": []}
    doc.update(changes)
    return doc


GOOD_HELLO = {"slave": "s-1", "host": "h.example", "pid": 7, "concurrency": 2, "timeout_ms": 2500}


# --------------------------------------------------------- round trips


def test_every_kind_a_slave_sends_decodes_to_what_was_encoded():
    failure = protocol.Failure(3, 17, "ValueError", "bad", "Traceback ...")
    report = decode_from_slave(
        protocol.report("s-1", "r", "t", 4, 9, [[3, [[10, 12]]]], [failure], queue=[[3, 2, 5]], cuts=[[3, 4]])
    )
    assert isinstance(report, protocol.Report) and not report.leaving
    assert (report.seq, report.want, report.acks, report.queue, report.cuts) == (4, 9, [(3, [(10, 12)])],
                                                                                  [(3, 2, 5)], [(3, 4)])
    assert report.failures == [failure]
    assert decode_from_slave(protocol.report("s-1", "r", "t", 5, 0, [], [], leaving=True)).leaving
    hello = decode_from_slave(protocol.hello("s-1", "h", 7, 2, 2500))
    assert (hello.slave, hello.host, hello.pid, hello.concurrency, hello.timeout_ms) == ("s-1", "h", 7, 2, 2500)
    assert isinstance(decode_from_slave(protocol.heartbeat("s-1", "r", "t")), protocol.Heartbeat)
    assert decode_from_slave(protocol.ack("s-1", "r", "t", [[1, [[0, 3]]]])).acks == [(1, [(0, 3)])]
    give = decode_from_slave(protocol.give_back("s-1", "r", "t", [[2, 0]], [[2, 0, 0]]))
    assert (give.cuts, give.queue) == ([(2, 0)], [(2, 0, 0)])
    assert isinstance(decode_from_slave(protocol.status_request()), protocol.StatusRequest)


def test_the_slave_reads_jobs_from_the_master():
    frames = protocol.jobs(4, [[0, 2]], protocol.pickle_jobs(["a", {"b": 1}]))
    assert protocol.decode_from_master(frames) == (protocol.JOBS, {"batch": 4, "positions": [[0, 2]]},
                                                   ["a", {"b": 1}])
    kind, header, jobs = protocol.decode_from_master(protocol.no_jobs())
    assert kind == protocol.JOBS and jobs == []


# -------------------------------------------------------- malformed input


FRAMES = [
    ([], "exactly two frames"),
    ([protocol.REQUEST], "exactly two frames"),
    ([protocol.REQUEST, b"{}", b"extra"], "exactly two frames"),
    ([protocol.REQUEST, b"x" * (protocol.MAX_INBOUND_BYTES + 1)], "too large"),
    ([protocol.REQUEST, b"{not json"], "not JSON"),
    ([protocol.REQUEST, b"\xff\xfe"], "not JSON"),
    ([protocol.REQUEST, b"[" * 100_000], "not JSON"),
    ([protocol.REQUEST, b"[1, 2]"], "JSON object"),
    ([protocol.REQUEST, b'"text"'], "JSON object"),
    ([b"WELCOME", b"{}"], "unknown message kind"),
    ([b"JOBS", b"{}"], "unknown message kind"),
    ([b"", b"{}"], "unknown message kind"),
    ([b"\x00" * 1000, b"{}"], "unknown message kind"),
]


@pytest.mark.parametrize("frames, reason", FRAMES, ids=[r for _, r in FRAMES])
def test_malformed_frames_are_refused_with_a_reason(frames, reason):
    with pytest.raises(ProtocolError, match=reason):
        decode_from_slave(frames)


@pytest.mark.parametrize("field", ["slave", "run", "token", "seq", "want"])
@pytest.mark.parametrize("value", WEIRD, ids=[repr(v)[:20] for v in WEIRD])
def test_a_weird_value_in_any_request_field(field, value):
    doc = good_request(**{field: value})
    valid = (field in ("run", "token") and isinstance(value, str) and len(value) <= protocol.MAX_ID_CHARS) or (
        field in ("seq",) and type(value) is int and 0 <= value <= protocol.MAX_POSITION
    )
    if valid:
        decode_from_slave([protocol.REQUEST, body(doc)])
    else:
        with pytest.raises(ProtocolError):
            decode_from_slave([protocol.REQUEST, body(doc)])


@pytest.mark.parametrize("field", sorted(GOOD_HELLO))
@pytest.mark.parametrize("value", WEIRD, ids=[repr(v)[:20] for v in WEIRD])
def test_a_weird_value_in_any_hello_field(field, value):
    with pytest.raises(ProtocolError):
        decode_from_slave([protocol.HELLO, body({**GOOD_HELLO, field: value})])


@pytest.mark.parametrize("acks", BAD_ACKS, ids=range(len(BAD_ACKS)))
@pytest.mark.parametrize("kind", [protocol.REQUEST, protocol.BYE, protocol.ACK])
def test_acks_that_break_the_rules(kind, acks):
    with pytest.raises(ProtocolError):
        decode_from_slave([kind, body(good_request(acks=acks))])


@pytest.mark.parametrize("failures", BAD_FAILURES, ids=range(len(BAD_FAILURES)))
def test_failures_that_break_the_rules(failures):
    with pytest.raises(ProtocolError):
        decode_from_slave([protocol.REQUEST, body(good_request(failures=failures))])


@pytest.mark.parametrize("queue", [[[1, 5, 2]], [[-1, 0, 0]], [[1, 0]], [["1", 0, 1]], "x", [[1, 0, 1]] * 10_001])
def test_queues_that_break_the_rules(queue):
    with pytest.raises(ProtocolError):
        decode_from_slave([protocol.REQUEST, body(good_request(queue=queue))])
    with pytest.raises(ProtocolError):
        decode_from_slave([protocol.GIVEBACK, body({"slave": "s", "run": "r", "token": "t", "cuts": [],
                                                    "queue": queue})])


@pytest.mark.parametrize("cuts", [[[1, -1]], [[1]], [[1, 2, 3]], [[1.0, 2]], None, [[1, 0]] * 10_001])
def test_cuts_that_break_the_rules(cuts):
    with pytest.raises(ProtocolError):
        decode_from_slave([protocol.GIVEBACK, body({"slave": "s", "run": "r", "token": "t", "cuts": cuts,
                                                    "queue": []})])


@pytest.mark.parametrize("name", ["", "a b", "a\nforged line", "\x1b[2J", "é", "x" * 129])
def test_ids_that_could_forge_log_lines_are_refused(name):
    with pytest.raises(ProtocolError, match="letters, digits|at most 128"):
        decode_from_slave([protocol.HELLO, body({**GOOD_HELLO, "slave": name})])


@settings(deadline=None)  # a shared machine: no time limit per example
@given(st.binary(max_size=200), st.binary(max_size=400))
def test_any_two_frames_either_decode_or_raise_protocol_error(kind, raw):
    try:
        decode_from_slave([kind, raw])
    except ProtocolError:
        pass


@settings(deadline=None)
@given(st.sampled_from([protocol.REQUEST, protocol.BYE, protocol.ACK, protocol.GIVEBACK, protocol.HELLO,
                        protocol.HEARTBEAT]),
       st.dictionaries(st.sampled_from(["slave", "run", "token", "seq", "want", "acks", "failures", "queue",
                                        "cuts", "host", "pid", "concurrency", "timeout_ms"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                                    lambda inner: st.lists(inner, max_size=3), max_leaves=10)))
def test_any_json_object_either_decodes_or_raises_protocol_error(kind, doc):
    try:
        decode_from_slave([kind, body(doc)])
    except ProtocolError:
        pass
