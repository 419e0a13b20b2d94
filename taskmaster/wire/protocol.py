"""The wire protocol between master and slaves, kept in one place.

Every message is a multipart ZeroMQ message whose first frame names its kind.
The master binds a ROUTER socket; each slave connects a DEALER for requests
and, from a real OS thread, a second DEALER for heartbeats (so a handler that
never yields to gevent cannot silence them).

Slave -> master, always JSON and validated here, never unpickled::

    HELLO      {slave, host, pid, concurrency, timeout_ms, conn, beat}
                                   conn: its request connections' routing ids are conn.N
                                   beat: the routing id of its liveness connection
    REQUEST    {slave, run, token, seq, want, acks, failures, queue, cuts}
                                   report what finished, failed, waits; want more jobs
    BYE        {slave, run, token, seq, want, acks, failures, queue, cuts}
                                   last report, then leaving
    ACK        {slave, run, token, acks, failures} finished and failed jobs, while a REQUEST waits
    HEARTBEAT  {slave, run, token}                 (liveness thread) still alive
    GIVEBACK   {slave, run, token, cuts, queue}    (liveness thread) jobs given back
    STATUS     {}                                  (tm-status) how is the run going?
    CONTROL    {command, rate, timeout_ms}         (tm-ctl) pause, resume, rate or stop;
                                   rate: jobs a second, or null for no limit (command "rate" only);
                                   timeout_ms: how long tm-ctl waits, so a pause answers before that

``seq`` numbers a slave's requests; a request sent again because its answer
did not come keeps its number, which tells the master that the batch in that
answer was lost and must go back to the queue.  ``queue`` lists, for each
batch the slave holds jobs of that it has not started, ``[batch, next, end]``:
the jobs at indices ``next .. end-1`` of that batch are waiting; the master
reads it to choose which slave to ask for jobs back when another runs dry.

An ACK gets no answer: it lets finished jobs free their place in the
master's window (``--size``) while the slave's request is parked there, and
the slave's next REQUEST acknowledges them again, in case it was lost.  The
failures it reports come again in that REQUEST too; a failure reported twice
counts once.  (Without them in the ACK, a stopping master, which parks
requests for up to a second, heard of the last jobs' failures that late.)

``cuts`` is ``[[batch, keep], ...]``: of that batch the slave runs only the
first ``keep`` jobs, the others it will never start.  A GIVEBACK (with the
slave's queue after the cut, even when it had nothing to give) answers a
RECALL at once, from the slave's liveness thread (which runs even while a
handler holds the main thread); the same cuts ride on the slave's next
REQUEST too, in case the GIVEBACK was lost.  Cuts are idempotent.

Master -> slave::

    WELCOME    {run, token, lease_timeout, heartbeat_interval}
                                   token: the slave's proof, in later messages, that it said hello
    JOBS       {batch, positions} + one pickle frame holding the list of jobs
    RECALL     {want[, upto]}      (to the liveness thread) give back up to `want` jobs
                                   not started, from the tail: another slave ran dry;
                                   with `upto` (a pause, a halt: every job wanted back),
                                   also every job of a batch numbered up to `upto` that
                                   arrives later (it was on its way): none of it starts
    QUIT       {reason}            the run is over (or stopping): exit
    RESET      {reason}            unknown run or slave: say HELLO again
    REJECT     {error}             the message was malformed
    STATUS     {...}               the answer to STATUS: see ``status.snapshot``
    CONTROL    {ok, error, ...}    the answer to CONTROL: the new state (see ``control``), or why not

Positions travel as half-open ranges ``[[start, stop], ...]``; acknowledgements
are ``[[batch, [[start, stop], ...]], ...]``, so a batch of a thousand finished
jobs costs a few bytes.  Only the job list is pickled, once per batch: jobs
must be picklable (that is the module contract), and slaves trust the master
they talk to.
"""

from __future__ import annotations

import json
import pickle
import re
from typing import Any, NamedTuple

# Slave -> master.
HELLO = b"HELLO"
REQUEST = b"REQUEST"
BYE = b"BYE"
HEARTBEAT = b"HEARTBEAT"
ACK = b"ACK"
GIVEBACK = b"GIVEBACK"
STATUS = b"STATUS"  # both ways: the question from tm-status, and the master's answer
CONTROL = b"CONTROL"  # both ways: a command from tm-ctl, and the master's answer
CONTROL_COMMANDS = ("pause", "resume", "rate", "stop")
MAX_RATE = 1e12  # jobs per second: --rate and tm-ctl rate accept no more
# Master -> slave.
WELCOME = b"WELCOME"
JOBS = b"JOBS"
RECALL = b"RECALL"
QUIT = b"QUIT"
RESET = b"RESET"
REJECT = b"REJECT"

# The master's socket drops any inbound message larger than this.
MAX_INBOUND_BYTES = 4 * 1024 * 1024
# Bounds on what one inbound message may carry, so a hostile or buggy
# peer cannot make the master do unbounded work for one message.
MAX_ID_CHARS = 128
MAX_ACK_BATCHES = 10_000
MAX_RANGES_PER_BATCH = 100_000
MAX_FAILURES = 10_000
MAX_TEXT_CHARS = 64 * 1024
MAX_POSITION = 2**62
MAX_WANT = 1_000_000
MAX_QUEUE_BATCHES = 10_000



class ProtocolError(ValueError):
    """An inbound message that does not follow the protocol."""


# What decode_from_slave returns: read-only records, so NamedTuples.  (Not
# dataclasses: each costs about a millisecond to define, in the start-up of
# every master and slave.)


class Failure(NamedTuple):
    """A job whose handler raised, as reported by a slave."""

    batch: int
    position: int
    type: str
    message: str
    traceback: str


class Hello(NamedTuple):
    slave: str
    host: str
    pid: int
    concurrency: int
    timeout_ms: int
    beat: str = ""  # the routing id its liveness thread's connection set: the only one its HEARTBEATs count from
    conn: str = ""  # its request connections are named conn.1, conn.2...: the only ones its REQUESTs count from


class Report(NamedTuple):
    """A REQUEST or a BYE: acknowledgements, failures and a wish for jobs."""

    slave: str
    run: str
    token: str
    seq: int
    want: int
    acks: list[tuple[int, list[tuple[int, int]]]]
    failures: list[Failure]
    leaving: bool
    queue: list[tuple[int, int, int]]  # (batch, next, end): not started
    cuts: list[tuple[int, int]]  # (batch, keep): given back


class Heartbeat(NamedTuple):
    slave: str
    run: str
    token: str


class Ack(NamedTuple):
    slave: str
    run: str
    token: str
    acks: list[tuple[int, list[tuple[int, int]]]]
    failures: list[Failure]


class GiveBack(NamedTuple):
    slave: str
    run: str
    token: str
    cuts: list[tuple[int, int]]
    queue: list[tuple[int, int, int]]


class StatusRequest(NamedTuple):
    pass


class ControlRequest(NamedTuple):
    command: str  # one of CONTROL_COMMANDS
    rate: float | None = None  # for "rate": jobs per second, None for no limit
    timeout_ms: int = 2500  # how long the asker waits for the answer


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# ---------------------------------------------------------------- encoding


def hello(
    slave: str, host: str, pid: int, concurrency: int, timeout_ms: int, beat: str = "", conn: str = ""
) -> list[bytes]:
    body: dict[str, Any] = {
        "slave": slave,
        "host": host,
        "pid": pid,
        "concurrency": concurrency,
        "timeout_ms": timeout_ms,
    }
    if beat:
        body["beat"] = beat
    if conn:
        body["conn"] = conn
    return [HELLO, _dumps(body)]


def report(
    slave: str,
    run: str,
    token: str,
    seq: int,
    want: int,
    acks: list,
    failures: list[Failure],
    leaving: bool = False,
    queue: list | None = None,
    cuts: list | None = None,
) -> list[bytes]:
    body = {
        "slave": slave,
        "run": run,
        "token": token,
        "seq": seq,
        "want": want,
        "acks": acks,
        "failures": [f._asdict() for f in failures],
        "queue": queue or [],
        "cuts": cuts or [],
    }
    return [BYE if leaving else REQUEST, _dumps(body)]


def heartbeat(slave: str, run: str, token: str) -> list[bytes]:
    return [HEARTBEAT, _dumps({"slave": slave, "run": run, "token": token})]


def ack(slave: str, run: str, token: str, acks: list, failures: list[Failure] | None = None) -> list[bytes]:
    body = {"slave": slave, "run": run, "token": token, "acks": acks}
    if failures:
        body["failures"] = [f._asdict() for f in failures]
    return [ACK, _dumps(body)]


def give_back(slave: str, run: str, token: str, cuts: list, queue: list) -> list[bytes]:
    return [GIVEBACK, _dumps({"slave": slave, "run": run, "token": token, "cuts": cuts, "queue": queue})]


def recall(want: int, upto: int | None = None) -> list[bytes]:
    return [RECALL, _dumps({"want": want} if upto is None else {"want": want, "upto": upto})]


def status_request() -> list[bytes]:
    return [STATUS, b"{}"]


def status_reply(snapshot: dict) -> list[bytes]:
    return [STATUS, _dumps(snapshot)]


def control_request(command: str, rate: float | None = None, timeout_ms: int = 2500) -> list[bytes]:
    return [CONTROL, _dumps({"command": command, "rate": rate, "timeout_ms": timeout_ms})]


def control_reply(answer: dict) -> list[bytes]:
    return [CONTROL, _dumps(answer)]


def welcome(run: str, token: str, lease_timeout: float, heartbeat_interval: float) -> list[bytes]:
    body = {"run": run, "token": token, "lease_timeout": lease_timeout, "heartbeat_interval": heartbeat_interval}
    return [WELCOME, _dumps(body)]


_NO_JOBS = pickle.dumps([])


def jobs(batch: int, positions: list[list[int]], pickled_jobs: bytes) -> list[bytes]:
    return [JOBS, _dumps({"batch": batch, "positions": positions}), pickled_jobs]


def no_jobs() -> list[bytes]:
    return jobs(-1, [], _NO_JOBS)


# The reason a QUIT gives when the master stops before the run is over (a
# signal, a disk error): a slave told to wait for its master (--wait-for-master)
# waits for the next one rather than exit.
QUIT_STOPPING = "the master is stopping"


def quit_(reason: str) -> list[bytes]:
    return [QUIT, _dumps({"reason": reason})]


def reset(reason: str) -> list[bytes]:
    return [RESET, _dumps({"reason": reason})]


def reject(error: str) -> list[bytes]:
    return [REJECT, _dumps({"error": error})]


def pickle_jobs(job_list: list) -> bytes:
    return pickle.dumps(job_list, protocol=pickle.HIGHEST_PROTOCOL)


# ------------------------------------------------- decoding on the slave


def decode_from_master(frames: list[bytes]) -> tuple[bytes, dict, list | None]:
    """Split a master's message into (kind, header, jobs or None).

    The slave unpickles the job list: it trusts the master it connected to.
    """
    if len(frames) < 2:
        raise ProtocolError("message from the master has too few frames")
    kind, header = frames[0], json.loads(frames[1])
    job_list = pickle.loads(frames[2]) if kind == JOBS and len(frames) > 2 else None
    return kind, header, job_list


# ------------------------------------------------ decoding on the master


def _int(body: dict, key: str, low: int = 0, high: int = MAX_POSITION) -> int:
    value = body.get(key)
    if type(value) is not int or not low <= value <= high:
        raise ProtocolError(f"{key!r} must be an integer in [{low}, {high}]")
    return value


def _str(body: dict, key: str, limit: int = MAX_ID_CHARS) -> str:
    value = body.get(key)
    if type(value) is not str or len(value) > limit:
        raise ProtocolError(f"{key!r} must be a string of at most {limit} characters")
    return value


_NAME = re.compile(r"[A-Za-z0-9_.:@-]+")


def _name(body: dict, key: str, limit: int = MAX_ID_CHARS) -> str:
    """An id or host name: printable, so it cannot forge log lines or drive a terminal."""
    value = _str(body, key, limit)
    if not _NAME.fullmatch(value):
        raise ProtocolError(f"{key!r} must be 1 to {limit} letters, digits or _.:@-")
    return value


def _ranges(value: Any) -> list[tuple[int, int]]:
    if type(value) is not list or len(value) > MAX_RANGES_PER_BATCH:
        raise ProtocolError("ranges must be a list of [start, stop] pairs")
    out = []
    for pair in value:
        if type(pair) is not list or len(pair) != 2:
            raise ProtocolError("a range must be a [start, stop] pair")
        start, stop = pair
        if type(start) is not int or type(stop) is not int or not 0 <= start < stop <= MAX_POSITION:
            raise ProtocolError("a range must hold integers with 0 <= start < stop")
        out.append((start, stop))
    return out


def _acks(value: Any) -> list[tuple[int, list[tuple[int, int]]]]:
    if type(value) is not list or len(value) > MAX_ACK_BATCHES:
        raise ProtocolError(f"'acks' must be a list of at most {MAX_ACK_BATCHES} [batch, ranges] pairs")
    out = []
    for item in value:
        if type(item) is not list or len(item) != 2 or type(item[0]) is not int or item[0] < 0:
            raise ProtocolError("an ack must be a [batch, ranges] pair")
        out.append((item[0], _ranges(item[1])))
    return out


def _queue(value: Any) -> list[tuple[int, int, int]]:
    if type(value) is not list or len(value) > MAX_QUEUE_BATCHES:
        raise ProtocolError(f"'queue' must be a list of at most {MAX_QUEUE_BATCHES} [batch, next, end] triples")
    out = []
    for item in value:
        if type(item) is not list or len(item) != 3 or any(type(x) is not int for x in item):
            raise ProtocolError("a queue entry must be a [batch, next, end] triple of integers")
        batch, start, end = item
        if not (0 <= batch and 0 <= start <= end <= MAX_POSITION):
            raise ProtocolError("a queue entry must have 0 <= next <= end")
        out.append((batch, start, end))
    return out


def _cuts(value: Any) -> list[tuple[int, int]]:
    if type(value) is not list or len(value) > MAX_QUEUE_BATCHES:
        raise ProtocolError(f"'cuts' must be a list of at most {MAX_QUEUE_BATCHES} [batch, keep] pairs")
    out = []
    for item in value:
        if type(item) is not list or len(item) != 2 or any(type(x) is not int or x < 0 for x in item):
            raise ProtocolError("a cut must be a [batch, keep] pair of integers >= 0")
        out.append((item[0], item[1]))
    return out


def _failures(value: Any) -> list[Failure]:
    if type(value) is not list or len(value) > MAX_FAILURES:
        raise ProtocolError(f"'failures' must be a list of at most {MAX_FAILURES} objects")
    out = []
    for item in value:
        if type(item) is not dict:
            raise ProtocolError("a failure must be an object")
        out.append(
            Failure(
                batch=_int(item, "batch"),
                position=_int(item, "position"),
                type=_str(item, "type", MAX_TEXT_CHARS),
                message=_str(item, "message", MAX_TEXT_CHARS),
                traceback=_str(item, "traceback", MAX_TEXT_CHARS),
            )
        )
    return out


def _control(body: dict) -> ControlRequest:
    command = body.get("command")
    if command not in CONTROL_COMMANDS:
        raise ProtocolError(f"'command' must be one of {', '.join(CONTROL_COMMANDS)}")
    rate = body.get("rate")
    if rate is not None and (type(rate) not in (int, float) or not 0 < rate <= MAX_RATE):
        raise ProtocolError(f"'rate' must be a number in (0, {MAX_RATE:g}] or null")
    timeout_ms = _int(body, "timeout_ms", 1, 24 * 3600 * 1000)
    return ControlRequest(command, None if rate is None else float(rate), timeout_ms)


def decode_from_slave(
    frames: list[bytes],
) -> Hello | Report | Ack | Heartbeat | GiveBack | StatusRequest | ControlRequest:
    """Parse and validate what a slave sent; raise ProtocolError otherwise.

    Data only: JSON is parsed, nothing is unpickled, and every field is
    checked for type and size before the master acts on it.
    """
    if len(frames) != 2:
        raise ProtocolError("a message must have exactly two frames: kind and body")
    kind, raw = frames
    if len(raw) > MAX_INBOUND_BYTES:
        raise ProtocolError("message too large")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(f"body is not JSON: {exc}") from None
    if type(body) is not dict:
        raise ProtocolError("body must be a JSON object")
    if kind == REQUEST or kind == BYE:
        return Report(
            slave=_name(body, "slave"),
            run=_str(body, "run"),
            token=_str(body, "token"),
            seq=_int(body, "seq"),
            want=_int(body, "want", 0, MAX_WANT),
            acks=_acks(body.get("acks", [])),
            failures=_failures(body.get("failures", [])),
            leaving=kind == BYE,
            queue=_queue(body.get("queue", [])),
            cuts=_cuts(body.get("cuts", [])),
        )
    if kind == ACK:
        slave, run, token = _name(body, "slave"), _str(body, "run"), _str(body, "token")
        failures = _failures(body.get("failures", []))
        return Ack(slave=slave, run=run, token=token, acks=_acks(body.get("acks")), failures=failures)
    if kind == GIVEBACK:
        return GiveBack(
            slave=_name(body, "slave"),
            run=_str(body, "run"),
            token=_str(body, "token"),
            cuts=_cuts(body.get("cuts")),
            queue=_queue(body.get("queue")),
        )
    if kind == HEARTBEAT:
        return Heartbeat(slave=_name(body, "slave"), run=_str(body, "run"), token=_str(body, "token"))
    if kind == STATUS:
        return StatusRequest()
    if kind == CONTROL:
        return _control(body)
    if kind == HELLO:
        return Hello(
            slave=_name(body, "slave"),
            host=_name(body, "host", 256),
            pid=_int(body, "pid"),
            concurrency=_int(body, "concurrency", 1, MAX_WANT),
            timeout_ms=_int(body, "timeout_ms", 1, 24 * 3600 * 1000),
            beat=_name(body, "beat") if "beat" in body else "",
            conn=_name(body, "conn") if "conn" in body else "",
        )
    raise ProtocolError(f"unknown message kind {kind[:32]!r}")
