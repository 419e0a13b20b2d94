"""A rogue peer throws thousands of malformed and out-of-place messages at a
running master while two real slaves work through the jobs.

The rogue is a plain pyzmq DEALER in the test process (plus a few raw TCP
connections that do not even speak ZMTP).  Everything it sends is derived
from a seeded random.Random, so a failure can be replayed with
TM_FUZZ_SEED=<seed>.  It never sends a message that may legitimately change
a job: it acknowledges and fails only positions and batches it was not
handed, and speaks only in slave ids of its own or made up ones.  The jobs it
takes through a proper HELLO + REQUEST it never reports, so they come back
to the real slaves when its lease (--lease-timeout 2) runs out.

The master must not crash, must finish the run (exit 0) with every job
handled, must count the messages it ignored, and must answer the rogue with
REJECT.

So that the amount of fuzzing does not depend on how fast this machine is,
the jobs from N/2 on wait behind a gate file, which the rogue opens only after
it has sent GATE_MESSAGES messages; it then keeps on until the run is over.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import socket
import subprocess
import time
from collections import Counter

import pytest
import zmq
from conftest import free_port, handled, start_logged, tail, text, tm, wait_exit, wait_listening

pytestmark = pytest.mark.slow

SEED = int(os.environ.get("TM_FUZZ_SEED", "20240229"))
N = 20_000
DELAY = "0.004"  # 2 slaves x 10 greenlets x 4 ms: at least 4 s of work
LEASE = "2"
MESSAGES = 6000  # at most; the rogue also stops when the run is over
GATE_MESSAGES = 1200  # the second half of the jobs waits until the rogue has sent this many
FUZZ_SECONDS = 60.0  # a bound on the time before the gate opens, however slow the machine
MAX_INBOUND = 4 * 1024 * 1024  # protocol.MAX_INBOUND_BYTES

KINDS = [b"HELLO", b"REQUEST", b"BYE", b"HEARTBEAT", b"STATUS", b"WELCOME", b"JOBS", b"QUIT", b"REJECT", b"RESET"]
WEIRD = [
    None, True, False, -1, -(2**63), 2**62 + 1, 2**64, 10**400, 1.5, 1e308, "", "x" * 300, "é\u0000\ud7ff",
    [], {}, [[]], [[1]], {"a": 1}, [-1, 2], [2, 1], [0, 0], [[0, 2**70]],
]  # fmt: skip


# Lists that break the rules for "acks" or "failures" (made on demand: some are large).
BAD_LISTS = [
    lambda: [[-1, [[0, 1]]]],
    lambda: [[1, [[5, 2]]]],
    lambda: [[1, [[-5, 3]]]],
    lambda: [[1, [[0, 2**70]]]],
    lambda: [[1, [[0, 1, 2]]]],
    lambda: [[1, "x"]],
    lambda: [[1.0, [[0, 1]]]],
    lambda: [[True, [[0, 1]]]],
    lambda: [[1, [[0, 1]]]] * 10_001,
    lambda: [[1, [[i, i + 1] for i in range(0, 200_002, 2)]]],
    lambda: [{"batch": 1, "position": -1, "type": "E", "message": "", "traceback": ""}],
    lambda: [{"batch": 1, "position": 0, "type": "E" * 70_000, "message": "", "traceback": ""}],
    lambda: [{"batch": 1}],
    lambda: ["failure"],
    lambda: {"not": "a list"},
]


# ------------------------------------------------------------------ helpers


def dumps(obj) -> bytes:
    # allow_nan: the rogue may send what Python's json happily parses (NaN, Infinity)
    return json.dumps(obj, separators=(",", ":"), allow_nan=True).encode()


class Rogue:
    """A DEALER that sends what `next_message` makes and keeps count of the replies."""

    def __init__(self, address: str, rng: random.Random) -> None:
        self.address = address
        self.rng = rng
        self.context = zmq.Context()
        self.sock = self._socket()
        self.replies: Counter[bytes] = Counter()
        self.rejections: Counter[str] = Counter()  # REJECT reasons, by their first words
        self.sent: Counter[str] = Counter()
        self.run_id = ""
        self.tokens: dict[str, str] = {}  # slave id -> token from its WELCOME
        self.seqs = itertools.count(1)  # request numbers
        self.own = f"rogue-{rng.randrange(16**8):08x}"  # the slave id it talks in, without taking jobs
        self.own_batches: dict[int, list[list[int]]] = {}
        self.taken: list[list[int]] = []  # ranges the rogue was handed and will never report

    def _socket(self):
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, 2000)
        sock.setsockopt(zmq.RCVHWM, 100000)
        sock.connect(self.address)
        return sock

    def close(self) -> None:
        self.sock.close(0)
        self.context.term()

    def send(self, label: str, frames: list[bytes]) -> None:
        try:
            self.sock.send_multipart(frames)
            self.sent[label] += 1
        except zmq.Again:
            self.sent["blocked"] += 1

    def drain(self, wait_ms: int = 0) -> list[list[bytes]]:
        got = []
        while self.sock.poll(wait_ms):
            wait_ms = 0
            frames = self.sock.recv_multipart()
            self.replies[frames[0]] += 1
            got.append(frames)
            if frames[0] == b"REJECT":
                self.rejections[" ".join(json.loads(frames[1])["error"].split()[:3])] += 1
            if frames[0] == b"JOBS" and len(frames) >= 2:
                header = json.loads(frames[1])
                if header.get("batch", -1) >= 0:
                    self.taken.append(header["positions"])
        return got

    def ask(self, frames: list[bytes], want: bytes, timeout: float = 5.0) -> list[bytes] | None:
        """Send and wait for a reply of kind `want` (other replies are counted and dropped)."""
        self.send("ask", frames)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for reply in self.drain(50):
                if reply[0] == want:
                    return reply
        return None

    def hello(self, slave: str) -> list[bytes]:
        body = {"slave": slave, "host": "rogue", "pid": 4242, "concurrency": 1, "timeout_ms": 60000}
        return [b"HELLO", dumps(body)]

    def report(self, slave: str, want: int = 0, acks=(), failures=(), kind: bytes = b"REQUEST", run=None):
        body = {"slave": slave, "run": self.run_id if run is None else run, "token": self.tokens.get(slave, "x"),
                "seq": next(self.seqs), "want": want, "acks": list(acks), "failures": list(failures)}  # fmt: skip
        return [kind, dumps(body)]

    def join(self) -> None:
        """A proper HELLO for the rogue's own id, and one batch of one job (never reported)."""
        reply = self.ask(self.hello(self.own), b"WELCOME")
        assert reply is not None, "the master did not welcome a proper HELLO"
        self.run_id = json.loads(reply[1])["run"]
        self.tokens[self.own] = json.loads(reply[1])["token"]
        reply = self.ask(self.report(self.own, want=1), b"JOBS", timeout=10)
        assert reply is not None, "the master did not answer a proper REQUEST"
        header = json.loads(reply[1])
        self.own_batches[header["batch"]] = header["positions"]

    def take_jobs(self) -> None:
        """A new slave id takes a batch through HELLO + REQUEST, then falls silent for ever."""
        taker = f"taker-{self.rng.randrange(16**8):08x}"
        welcome = self.ask(self.hello(taker), b"WELCOME")
        if welcome is not None:
            self.tokens[taker] = json.loads(welcome[1])["token"]
            self.ask(self.report(taker, want=self.rng.randint(1, 200)), b"JOBS")

    # ------------------------------------------------------------ messages

    def valid(self) -> list[bytes]:
        """A well-formed message that changes nothing (the raw material of mutations)."""
        return self.rng.choice(
            [
                self.hello(f"ghost-{self.rng.randrange(1000)}"),
                self.report(self.own, want=0),
                [b"HEARTBEAT", dumps({"slave": self.own, "run": self.run_id, "token": self.tokens.get(self.own)})],
                [b"STATUS", b"{}"],
                self.report(self.own, acks=[[self.rng.randrange(10**6), [[10**9, 10**9 + 5]]]]),
            ]
        )

    def next_message(self) -> tuple[str, list[bytes]]:
        rng = self.rng
        roll = rng.random()
        if roll < 0.10:  # random frames, random count
            return "random", [rng.randbytes(rng.randrange(0, 200)) for _ in range(rng.randint(1, 5))]
        if roll < 0.17:  # wrong number of frames around a valid message
            frames = self.valid()
            choice = rng.randrange(4)
            if choice == 0:
                return "frames", frames[:1]
            if choice == 1:
                return "frames", [*frames, rng.randbytes(10)]
            if choice == 2:
                return "frames", [b"", *frames]
            return "frames", frames * rng.randint(2, 6)
        if roll < 0.27:  # a known kind with a body that is not a JSON object
            body = rng.choice(
                [
                    rng.randbytes(rng.randrange(1, 100)),
                    b"",
                    b"{",
                    b"[]",
                    b"null",
                    b'"hello"',
                    b"42",
                    b"\xff\xfe{\x00}\x00",
                    b"[" * 100_000 + b"]" * 100_000,
                    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
                    b"9" * 5000,
                    b'{"slave": "' + b"\xc3\x28" * 10 + b'"}',
                ]
            )
            return "garbage-json", [rng.choice(KINDS), body]
        if roll < 0.40:  # a valid shape with one field of a wrong type or out of range
            # (a BYE names nobody it knows: a BYE in its own name would be legitimate)
            kind, raw = rng.choice([self.hello("ghost"), self.report(self.own), self.report("nobody", kind=b"BYE")])
            body = json.loads(raw)
            if kind == b"HELLO" or rng.random() < 0.5:
                key = rng.choice(sorted(body))
                if rng.random() < 0.15:
                    del body[key]
                else:
                    body[key] = rng.choice(WEIRD)
            else:
                body[rng.choice(["acks", "failures"])] = rng.choice(BAD_LISTS)()
            return "wrong-types", [kind, dumps(body)]
        if roll < 0.52:  # mutated or truncated valid messages
            kind, raw = self.valid()
            if rng.random() < 0.3:
                return "truncated", [kind, raw[: rng.randrange(len(raw))]]
            data = bytearray(raw)
            for _ in range(rng.randint(1, 3)):
                op = rng.randrange(3)
                at = rng.randrange(len(data) + 1)
                if op == 0 and at < len(data):
                    data[at] = rng.randrange(256)
                elif op == 1:
                    data[at:at] = rng.randbytes(rng.randint(1, 4))
                else:
                    del data[at : at + rng.randint(1, 4)]
            if rng.random() < 0.2:
                kind = bytes(rng.choice(kind) for _ in kind)
            return "mutated", [kind, bytes(data)]
        if roll < 0.64:  # well-formed, in its own name, about jobs it was not handed
            batch_id, ranges = rng.choice(list(self.own_batches.items()))
            start, stop = ranges[0][0], ranges[-1][1]
            acks = rng.choice(
                [
                    [[rng.randrange(1, 100_000), [[start, stop]]]],  # a batch it was never handed
                    [[batch_id, [[stop, stop + rng.randint(1, 5000)]]]],  # outside its batch
                    [[batch_id, [[start, stop + 1]]]],
                    [[batch_id, [[start - 1, stop]] if start > 0 else [[stop + 1, stop + 2]]]],
                    [[batch_id, [[0, 2**62]]]],
                    [[batch_id + rng.randint(1, 1000), [[rng.randrange(N), N + 1]]]],
                ]
            )
            failures = []
            if rng.random() < 0.3:
                acks = []
                failures = [
                    {
                        "batch": rng.choice([batch_id, rng.randrange(1, 100_000)]),
                        "position": rng.choice([stop + 10**6, 10**9, rng.randrange(N) + 2 * N]),
                        "type": "RogueError",
                        "message": "made up",
                        "traceback": "none",
                    }
                ]
            return "out-of-place", self.report(self.own, want=0, acks=acks, failures=failures)
        if roll < 0.74:  # made-up run ids and slave ids
            who = rng.choice([self.own, f"nobody-{rng.randrange(10**6)}", "y" * 128])
            run = rng.choice([self.run_id, "0" * 32, uuid_like(rng), ""])
            kind = rng.choice([b"REQUEST", b"BYE", b"HEARTBEAT"])
            if kind == b"HEARTBEAT":
                return "made-up", [kind, dumps({"slave": who, "run": run, "token": "made-up"})]
            if who == self.own and run == self.run_id:
                run = uuid_like(rng)  # never BYE in its own name: that is legitimate
            acks = [[rng.randrange(1, 1000), [[0, rng.randint(1, N)]]]]
            return "made-up", self.report(who, want=rng.randint(0, 100), acks=acks, kind=kind, run=run)
        if roll < 0.78:  # BYE for slave ids that are not its own
            other = rng.choice([f"slave-{rng.randrange(10**6)}", "ghost-1", "taker-00000000"])
            return "bye-other", self.report(other, kind=b"BYE")
        if roll < 0.82:
            return "status", [b"STATUS", rng.choice([b"{}", b'{"x":1}'])]
        if roll < 0.95:  # HELLOs: a few proper ones, many broken ones
            body = json.loads(self.hello(f"ghost-{rng.randrange(50)}")[1])
            if rng.random() < 0.7:
                body[rng.choice(sorted(body))] = rng.choice(WEIRD)
            return "hello", [b"HELLO", dumps(body)]
        return "valid-noise", self.valid()


def uuid_like(rng: random.Random) -> str:
    return f"{rng.getrandbits(128):032x}"


def raw_garbage(port: int, rng: random.Random) -> None:
    """A TCP connection that does not speak ZMTP: random bytes, or a greeting gone wrong."""
    greeting = b"\xff" + b"\x00" * 8 + b"\x01\x7f" + b"\x03\x00" + b"CURVE".ljust(20, b"\x00") + b"\x00" * 31
    payload = rng.choice([rng.randbytes(rng.randrange(1, 4096)), greeting + rng.randbytes(64), greeting[:11]])
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(payload)
            s.settimeout(0.05)
            try:
                s.recv(4096)
            except OSError:
                pass
    except OSError:
        pass


def oversized(rng: random.Random) -> tuple[str, list[bytes]]:
    """Bodies over the protocol's 4 MiB: just over it (REJECT) or over the socket's limit too (dropped)."""
    if rng.random() < 0.5:
        return "oversized", [b"REQUEST", b"x" * (MAX_INBOUND + rng.randint(1, 1000))]
    return "oversized-socket", [b"HELLO", b" " * (MAX_INBOUND + 8192 + rng.randint(0, 10**6))]


# -------------------------------------------------------------------- test


@pytest.mark.timeout(150)
def test_rogue_messages_do_not_hurt_the_run(procs, tmp_path, recording):
    module, record, env = recording
    gate = tmp_path / "gate"
    env = {**env, "TM_DELAY": DELAY, "TASKMASTER_SECRET_FILE": "", "TASKMASTER_INSECURE": "1"}  # a plain-text rogue
    env.update(TM_GATE=str(gate), TM_GATE_AT=str(N // 2))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    mlog = tmp_path / "master.log"
    master = start_logged(
        procs,
        tm("master", module, f"n={N}", "--address", address, "--lease-timeout", LEASE, "--no-progress"),
        mlog,
        env,
    )
    wait_listening(master, mlog)
    assert master.poll() is None, tail(mlog)

    rng = random.Random(SEED)
    rogue = Rogue(address, rng)
    try:
        rogue.join()  # before the slaves: it holds a batch of its own for the out-of-place reports
        slogs = [tmp_path / f"slave-{i}.log" for i in range(2)]
        slaves = [
            start_logged(procs, tm("slave", module, "--address", address, "--no-progress"), log, env) for log in slogs
        ]
        started = time.monotonic()
        sent_while_running = 0
        for i in range(MESSAGES):
            if not gate.exists() and (i >= GATE_MESSAGES or time.monotonic() - started > FUZZ_SECONDS):
                gate.touch()
            if master.poll() is not None:
                break
            if i % 1000 == 500:
                for _ in range(3):
                    rogue.send(*oversized(rng))
            if i % 400 == 0:
                rogue.take_jobs()
            if i % 200 == 100:
                raw_garbage(port, rng)
            rogue.send(*rogue.next_message())
            sent_while_running += 1
            if i % 50 == 0:
                rogue.drain()
                time.sleep(0.01)
        rogue.drain(500)
    finally:
        gate.touch()
        rogue.close()

    fuzz_seconds = time.monotonic() - started
    print(f"seed {SEED}: {sent_while_running} messages in {fuzz_seconds:.1f}s; sent {dict(rogue.sent)}")
    print(f"replies {dict(rogue.replies)}")
    print(f"rejections {rogue.rejections.most_common()}")
    code = wait_exit(master, 90, mlog)
    log = text(mlog)
    assert code == 0, f"master exit code {code}:\n{tail(mlog)}"
    assert "Traceback" not in log, log[-5000:]
    for proc, slog in zip(slaves, slogs, strict=True):
        assert wait_exit(proc, 30, slog) == 0, tail(slog)
        assert "Traceback" not in text(slog), tail(slog)

    jobs = handled(record)
    missing = set(range(N)) - set(jobs)
    assert not missing, f"{len(missing)} jobs never handled, e.g. {sorted(missing)[:10]}"
    assert all(0 <= j < N for j in jobs)

    [line] = [line for line in log.splitlines() if line.startswith("tm-master: ") and " finished, " in line]
    assert f"{N} finished, 0 failed" in line, line
    match = re.search(r"(\d+) malformed messages ignored", line)
    assert match, line
    assert int(match.group(1)) >= 500, line

    # the fuzzing really happened while the run went on, and was answered
    assert sent_while_running >= 1000, (sent_while_running, rogue.sent)
    assert rogue.replies[b"REJECT"] >= 200, rogue.replies
    reasons = " | ".join(rogue.rejections)
    # ("message too large" may be lost when the next message breaks the socket's limit: see test_oversized_messages)
    for reason in ["body is not", "unknown message kind", "a message must", "an ack must", "a range must"]:
        assert reason in reasons, f"no REJECT for {reason!r}: {rogue.rejections.most_common()}"
    assert rogue.replies[b"RESET"] >= 20, rogue.replies
    assert rogue.replies[b"STATUS"] >= 20, rogue.replies
    assert rogue.taken, "the rogue never took jobs through HELLO + REQUEST"
    # the jobs it took and never reported went to the real slaves
    taken = {p for ranges in rogue.taken for a, b in ranges for p in range(a, b)}
    assert taken <= set(jobs)
    assert "silent for" in log, "no rogue lease ran out"


@pytest.mark.timeout(120)
def test_rogue_without_the_secret_gets_no_answer_at_all(procs, tmp_path, recording):
    """With a secret, the same rogue never gets past the handshake: no reply, nothing counted but refusals."""
    module, record, env = recording
    secret = tmp_path / "secret"
    assert procs.run(tm("master", "--new-secret", secret), timeout=30).returncode == 0
    n = 2000
    gate = tmp_path / "gate"  # the second half of the jobs waits until the rogue has sent 500 messages
    env = {
        **env,
        "TM_DELAY": "0.02",
        "TASKMASTER_SECRET_FILE": str(secret),
        "TM_GATE": str(gate),
        "TM_GATE_AT": str(n // 2),
    }
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    mlog, slog = tmp_path / "master.log", tmp_path / "slave.log"
    master = start_logged(procs, tm("master", module, f"n={n}", "--address", address, "--no-progress"), mlog, env)
    wait_listening(master, mlog)
    slave = start_logged(procs, tm("slave", module, "--address", address, "--no-progress"), slog, env)

    rng = random.Random(SEED)
    rogue = Rogue(address, rng)
    rogue.run_id = uuid_like(rng)
    rogue.own_batches = {1: [[0, 10]]}
    # Its handshakes fail, so most of the time it has no peer to queue messages for: do not wait.
    rogue.sock.setsockopt(zmq.SNDTIMEO, 5)
    sent = 0
    try:
        for i in range(1500):
            if i == 500:
                gate.touch()
            if master.poll() is not None:
                break
            rogue.send(*rogue.next_message())
            sent += 1
            if i % 100 == 50:
                raw_garbage(port, rng)
            if i % 50 == 0:
                rogue.drain()
                time.sleep(0.01)
        rogue.drain(500)
    finally:
        gate.touch()
        rogue.close()

    assert wait_exit(master, 90, mlog) == 0, tail(mlog)
    assert wait_exit(slave, 30, slog) == 0, tail(slog)
    assert set(handled(record)) == set(range(n))
    assert sent >= 500 and rogue.sent.total() > rogue.sent["blocked"], (sent, rogue.sent.most_common())
    assert not rogue.replies, f"a rogue without the secret got answers: {dict(rogue.replies)}"
    log = text(mlog)
    [line] = [line for line in log.splitlines() if line.startswith("tm-master: ") and " finished, " in line]
    assert f"{n} finished, 0 failed" in line, line
    assert "malformed" not in line, line  # nothing it sent reached the master's loop
    assert "connections refused" in line, line
    assert 1 <= log.count("refused a connection") <= 2, log
    assert log.count(" joined ") == 1, log
    assert "Traceback" not in log


@pytest.mark.timeout(60)
def test_oversized_messages(procs, tmp_path, recording):
    """Just over 4 MiB: REJECT.  Over the socket's limit: dropped unread (no reply), and the master serves on."""
    module, _, env = recording
    env = {**env, "TASKMASTER_SECRET_FILE": "", "TASKMASTER_INSECURE": "1"}
    address = f"tcp://127.0.0.1:{free_port()}"
    mlog = tmp_path / "master.log"
    master = start_logged(procs, tm("master", module, "n=100", "--address", address, "--no-progress"), mlog, env)
    wait_listening(master, mlog)
    rogue = Rogue(address, random.Random(SEED))
    try:
        reply = rogue.ask([b"REQUEST", b"x" * (MAX_INBOUND + 100)], b"REJECT", timeout=20)
        assert reply is not None, tail(mlog)
        assert "too large" in json.loads(reply[1])["error"], reply
        rogue.send("huge", [b"HELLO", b" " * (MAX_INBOUND + 2 * 1024 * 1024)])
        assert rogue.drain(2000) == [], "a message over the socket's limit was read and answered"
        status = None
        deadline = time.monotonic() + 20
        while status is None and time.monotonic() < deadline:  # the DEALER reconnects meanwhile
            status = rogue.ask([b"STATUS", b"{}"], b"STATUS", timeout=1)
        assert status is not None, f"the master stopped answering:\n{tail(mlog)}"
        assert json.loads(status[1])["state"] == "running"
    finally:
        rogue.close()
    assert master.poll() is None, tail(mlog)
    assert "Traceback" not in text(mlog)


# ------------------------------------------------------------ out of place


@pytest.mark.timeout(120)
def test_jobs_asked_for_after_a_bye_come_back_when_the_asker_falls_silent(procs, tmp_path, recording):
    """A REQUEST after the same slave's BYE: the jobs it gets must not be stranded.

    A peer says HELLO, then BYE (the master answers QUIT), then asks for jobs
    again in the same name, gets a batch and falls silent.  Like any silent
    slave it must lose those jobs after --lease-timeout, and the real slave
    must run them; the run must end.
    """
    module, record, env = recording
    env = {**env, "TASKMASTER_SECRET_FILE": "", "TASKMASTER_INSECURE": "1"}
    n = 1000
    address = f"tcp://127.0.0.1:{free_port()}"
    mlog, slog = tmp_path / "master.log", tmp_path / "slave.log"
    master = start_logged(
        procs,
        tm("master", module, f"n={n}", "--address", address, "--lease-timeout", LEASE, "--no-progress"),
        mlog,
        env,
    )
    wait_listening(master, mlog)
    rogue = Rogue(address, random.Random(SEED))
    try:
        welcome = rogue.ask(rogue.hello(rogue.own), b"WELCOME")
        assert welcome is not None, tail(mlog)
        rogue.run_id = json.loads(welcome[1])["run"]
        rogue.tokens[rogue.own] = json.loads(welcome[1])["token"]
        assert rogue.ask(rogue.report(rogue.own, kind=b"BYE"), b"QUIT") is not None, tail(mlog)
        # out of place: asking for jobs after saying goodbye
        rogue.send("after-bye", rogue.report(rogue.own, want=100))
        reply = None
        deadline = time.monotonic() + 10
        while reply is None and time.monotonic() < deadline:
            reply = next(iter(rogue.drain(100)), None)
        assert reply is not None, "no answer to the REQUEST after BYE"
        header = json.loads(reply[1]) if reply[0] == b"JOBS" else {}
        stranded = [p for a, b in header.get("positions", []) for p in range(a, b)]
    finally:
        rogue.close()  # and falls silent

    slave = start_logged(procs, tm("slave", module, "--address", address, "--no-progress"), slog, env)
    try:
        code = master.wait(timeout=30)  # 2 s lease + a few seconds of work, generously
    except subprocess.TimeoutExpired:
        status = subprocess.run(
            tm("status", "--address", address, "--timeout", "5000"), capture_output=True, text=True, timeout=60
        )
        raise AssertionError(
            f"the run never ended: the reply to the REQUEST after BYE was {reply[0]!r} {header}, and the "
            f"{len(stranded)} jobs it handed out never came back; tm-status:\n{status.stdout}{status.stderr}"
        ) from None
    assert code == 0, tail(mlog)
    assert wait_exit(slave, 30, slog) == 0, tail(slog)
    assert set(handled(record)) == set(range(n))
