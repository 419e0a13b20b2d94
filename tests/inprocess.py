"""In-process stand-ins for the unit tests that drive the master (and slave) through their seams.

``FakeEndpoint`` is the master's ROUTER socket in memory; ``Harness`` a
prepared master with its filler greenlet and a clock the test moves.  Only
unit tests use these: end-to-end tests run real processes on real sockets.
"""

from __future__ import annotations

import json
import time

import gevent

from taskmaster.master.core import Master, MasterConfig
from taskmaster.wire import protocol


class FakeEndpoint:
    """The master's socket, in memory: what was sent to whom."""

    def __init__(self) -> None:
        self.keys = None
        self.refusals = 0
        self.sent: list[tuple[bytes, list[bytes]]] = []

    def bind(self) -> None:
        pass

    def close(self) -> None:
        pass

    def receive(self, timeout_ms: int) -> list[list[bytes]]:
        return []

    def send(self, identity: bytes, frames: list[bytes]) -> None:
        self.sent.append((identity, frames))

    def replies(self, identity: bytes) -> list[tuple[bytes, dict, list | None]]:
        return [protocol.decode_from_master(f) for i, f in self.sent if i == identity]

    def last(self, identity: bytes) -> tuple[bytes, dict, list | None]:
        return self.replies(identity)[-1]


class Harness:
    """A prepared master with a fake endpoint, its filler greenlet, and a clock."""

    def __init__(self, tmp_path, get_jobs, **config) -> None:
        defaults = dict(progress=False, linger=0.0, checkpoint_interval=3600.0)
        cfg = MasterConfig(
            state_path=str(tmp_path / "run.state"),
            failures_path=str(tmp_path / "run.failures.jsonl"),
            **{**defaults, **config},
        )
        self.endpoint = FakeEndpoint()
        self.master = Master(get_jobs, "mod:get_jobs", {}, cfg, endpoint=self.endpoint)
        assert self.master.prepare() is None
        self.now = time.monotonic()
        self.master.start(self.now)
        self.filler = gevent.spawn(self.master.source.fill)
        self.seqs: dict[str, int] = {}

    def fill(self) -> None:
        """Let the filler pull what it can."""
        for _ in range(1000):
            gevent.sleep(0)
            if self.master.source.exhausted or self.master.ledger.space() == 0:
                return

    def send(self, identity: bytes, frames: list[bytes]) -> tuple[bytes, dict, list | None] | None:
        before = len(self.endpoint.sent)
        self.master.handle([identity, *frames], self.now)
        replies = [f for i, f in self.endpoint.sent[before:] if i == identity]
        return protocol.decode_from_master(replies[-1]) if replies else None

    def hello(self, name: str) -> dict:
        # Its liveness connection is NAME-beat (the only one its heartbeats count from).
        kind, header, _ = self.send(name.encode(), protocol.hello(name, "host", 1, 4, 2500, beat=f"{name}-beat"))
        assert kind == protocol.WELCOME, (kind, header)
        return header

    def request(self, name: str, welcome: dict, want: int, acks=(), failures=(), leaving=False):
        self.seqs[name] = self.seqs.get(name, 0) + 1
        frames = protocol.report(
            name, welcome["run"], welcome["token"], self.seqs[name], want, list(acks), list(failures), leaving
        )
        return self.send(name.encode(), frames)

    def tick(self, seconds: float = 0.0):
        """One tick, `seconds` after the last (more than a second is a stall of the master: see Master.tick)."""
        self.now += seconds
        return self.master.tick(self.now)

    def elapse(self, seconds: float, step: float = 0.1):
        """Time passes with the master ticking as a real one does; the last tick's Outcome."""
        outcome = None
        for _ in range(round(seconds / step)):
            outcome = self.tick(step)
        return outcome

    def end(self):
        """Tick past any lingering: the Outcome."""
        for _ in range(10):
            outcome = self.tick(1.0)
            if outcome is not None:
                return outcome
        raise AssertionError(f"the run did not end: {self.master.phase}")

    def close(self) -> None:
        self.filler.kill()
        self.master.failed_jobs.file.close()


def ranged(tmp_path, n: int, **config) -> Harness:
    """A master over the jobs 0..n-1 (``get_jobs(last)`` is ``range(last, n)``), its window filled."""

    def get_jobs(last=0):
        return range(int(last), n)

    h = Harness(tmp_path, get_jobs, **config)
    h.fill()
    return h


def join(h: Harness, name: str, concurrency: int = 4) -> dict:
    """HELLO from a slave that names its request connections as real ones do (NAME.1, NAME.2, ...); the WELCOME."""
    frames = protocol.hello(name, "host", 1, concurrency, 2500, beat=f"{name}-beat", conn=name)
    kind, header, _ = h.send(f"{name}.1".encode(), frames)
    assert kind == protocol.WELCOME, (kind, header)
    return header


def report(welcome: dict, name: str, seq: int, want: int, acks=(), leaving: bool = False) -> list[bytes]:
    """A REQUEST (or, leaving, a BYE) of slave `name` in the run `welcome` let it into."""
    return protocol.report(name, welcome["run"], welcome["token"], seq, want, list(acks), [], leaving)


def pause_answers(h: Harness, asker: bytes = b"ctl") -> list[dict]:
    """The CONTROL answers sent to `asker`, in order."""
    return [json.loads(frames[1]) for identity, frames in h.endpoint.sent if identity == asker]
