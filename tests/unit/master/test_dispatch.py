"""The dispatcher on its own: no master, no socket - a ledger, a registry, a pace, and a list for what it sends.

Batches are sized by the window, a request that finds nothing is parked and
answered once (with jobs when they come, NO_JOBS when it waited long
enough), and a slave that ran dry makes the one holding the largest backlog
of unstarted jobs give half of it back.
"""

from __future__ import annotations

from taskmaster.master.dispatch import PARK_HOLDING_SECONDS, PARK_IDLE_SECONDS, Dispatcher
from taskmaster.master.ledger import Ledger
from taskmaster.master.pace import Pace
from taskmaster.master.registry import SlaveRegistry
from taskmaster.master.shutdown import Shutdown
from taskmaster.master.source import JobSource
from taskmaster.wire import protocol


class Books:
    """What a dispatcher works with, and what it sent to whom."""

    def __init__(self, size: int = 100, jobs: int = 0, rate: float | None = None) -> None:
        self.ledger = Ledger(size, stretch=1)
        self.ledger.add(list(range(jobs)))
        self.registry = SlaveRegistry(self.ledger, lease_timeout=30)
        self.pace = Pace(rate, 0.0)
        self.shutdown = Shutdown(grace=5.0, linger=0.0)
        self.sent: list[tuple[bytes, list[bytes]]] = []
        self.dispatcher = Dispatcher(
            self.ledger, self.registry, JobSource(self.ledger), self.pace, self.shutdown,
            lambda identity, frames: self.sent.append((identity, frames)),
        )

    def join(self, name: str):
        slave = self.registry.join(name, "host", 1, 4, 3000, name.encode(), now=0.0)
        self.registry.hello(slave, f"{name}-beat".encode(), b"")
        return slave

    def to(self, identity: bytes) -> list[tuple[bytes, dict, list | None]]:
        return [protocol.decode_from_master(frames) for i, frames in self.sent if i == identity]


def test_a_batch_is_the_slaves_share_of_the_window():
    books = Books(size=100, jobs=100)
    a, _ = books.join("a"), books.join("b")
    books.dispatcher.answer(a, want=1000, now=0.0)
    [(kind, header, jobs)] = books.to(b"a")
    assert kind == protocol.JOBS
    assert jobs == list(range(25))  # 100 held, 2 slaves: a quarter, so that both stay busy
    assert header["positions"] == [[0, 25]]


def test_a_batch_never_exceeds_what_the_slave_wants():
    books = Books(size=100, jobs=100)
    a = books.join("a")
    books.dispatcher.answer(a, want=3, now=0.0)
    [(_, _, jobs)] = books.to(b"a")
    assert jobs == [0, 1, 2]


def test_a_request_that_finds_nothing_is_parked_then_answered_once_with_no_jobs():
    books = Books(size=100, jobs=0)
    a = books.join("a")
    books.dispatcher.answer(a, want=10, now=0.0)
    assert books.to(b"a") == [] and "a" in books.dispatcher.parked
    books.dispatcher.serve_parked(now=0.0)
    assert books.to(b"a") == []  # not yet: it waits for jobs
    books.dispatcher.serve_parked(now=PARK_IDLE_SECONDS)
    books.dispatcher.serve_parked(now=PARK_IDLE_SECONDS + 1)
    assert [kind for kind, _, _ in books.to(b"a")] == [protocol.JOBS]
    assert books.to(b"a")[0][1]["batch"] == -1  # NO_JOBS, once
    assert books.dispatcher.parked == {}


def test_a_parked_request_gets_the_jobs_that_come():
    books = Books(size=100, jobs=0)
    a = books.join("a")
    books.dispatcher.answer(a, want=10, now=0.0)
    books.ledger.add(["x", "y"])
    books.dispatcher.serve_parked(now=0.001)
    [(kind, header, jobs)] = books.to(b"a")
    assert kind == protocol.JOBS and jobs == ["x", "y"] and header["batch"] > 0


def test_a_request_asked_again_is_answered_once():
    books = Books(size=100, jobs=0)
    a = books.join("a")
    books.dispatcher.answer(a, want=10, now=0.0)
    books.dispatcher.answer(a, want=10, now=0.5)  # the same request, retried on a new connection
    books.dispatcher.serve_parked(now=10.0)
    assert len(books.to(b"a")) == 1


def test_a_forgotten_request_gets_no_answer():
    books = Books(size=100, jobs=0)
    a = books.join("a")
    books.dispatcher.answer(a, want=10, now=0.0)
    books.dispatcher.forget("a")
    books.dispatcher.serve_parked(now=10.0)
    assert books.to(b"a") == []


def test_a_dry_slave_makes_the_largest_backlog_give_half_back():
    books = Books(size=100, jobs=14)
    a, b, c = books.join("a"), books.join("b"), books.join("c")
    books.dispatcher.answer(a, want=10, now=0.0)  # a holds 10, not started
    books.dispatcher.answer(b, want=4, now=0.0)  # b holds 4
    books.dispatcher.answer(c, want=10, now=0.0)  # none left: c is dry
    assert "c" in books.dispatcher.parked
    [(kind, header, _)] = books.to(b"a-beat")
    assert kind == protocol.RECALL and header["want"] == 5
    assert books.to(b"b-beat") == []


def test_a_slave_that_holds_jobs_waits_briefly_one_that_holds_none_longer():
    books = Books(size=100, jobs=4)
    a, b = books.join("a"), books.join("b")
    books.dispatcher.answer(a, want=4, now=0.0)
    books.dispatcher.answer(a, want=4, now=0.0)  # holds 4 already, finds none
    books.dispatcher.answer(b, want=4, now=0.0)
    assert books.dispatcher.parked["a"][0] == PARK_HOLDING_SECONDS
    assert books.dispatcher.parked["b"][0] == PARK_IDLE_SECONDS


def test_nothing_goes_out_while_paused_and_the_parked_request_is_served_on_resume():
    books = Books(size=100, jobs=10)
    a = books.join("a")
    books.pace.pause()
    books.dispatcher.answer(a, want=5, now=0.0)
    assert books.to(b"a") == []
    books.pace.resume()
    books.dispatcher.serve_parked(now=0.01)
    [(kind, _, jobs)] = books.to(b"a")
    assert kind == protocol.JOBS and jobs == [0, 1, 2, 3, 4]


def test_the_rate_limit_paces_the_batches():
    books = Books(size=1000, jobs=1000, rate=100.0)  # a bucket of 100 * 0.1 s = 10 tokens
    a = books.join("a")
    books.dispatcher.answer(a, want=500, now=0.0)
    [(_, _, jobs)] = books.to(b"a")
    assert len(jobs) == 10
    books.dispatcher.answer(a, want=500, now=0.0)  # no token left: parked
    assert len(books.to(b"a")) == 1 and "a" in books.dispatcher.parked
