"""The filler greenlet never dies silently: whatever stops it ends the source with an error the master reports."""

from __future__ import annotations

import gevent

from taskmaster.master.ledger import Ledger
from taskmaster.master.source import JobSource


class Abandon(BaseException):
    """Not an Exception."""


def jobs_then(exc: BaseException, n: int = 5):
    yield from range(n)
    raise exc


def test_a_base_exception_from_get_jobs_ends_the_source_after_the_jobs_before_it():
    ledger = Ledger(100, stretch=1)
    source = JobSource(ledger)
    source.open(lambda: jobs_then(Abandon("gave up")), {})
    filler = gevent.spawn(source.fill)
    filler.join(10)
    assert filler.dead and filler.successful()
    assert source.exhausted and source.crash == "Abandon: gave up"
    assert "raise exc" in (source.error or "")
    assert ledger.take(100, "s", alone=True)[0] == [0, 1, 2, 3, 4]


class BrokenLedger(Ledger):
    def add(self, jobs: list) -> None:
        raise RuntimeError("a bug in the ledger")


def test_a_bug_in_the_filler_itself_ends_the_source_with_its_traceback():
    source = JobSource(BrokenLedger(100, stretch=1))
    source.open(lambda: iter(range(10)), {})
    filler = gevent.spawn(source.fill)
    filler.join(10)
    assert filler.dead and filler.successful()
    assert source.exhausted and source.crash == "RuntimeError: a bug in the ledger"
    assert "a bug in the ledger" in (source.error or "")


def test_being_killed_at_the_end_of_the_run_is_no_crash():
    source = JobSource(Ledger(1, stretch=1))
    source.open(lambda: iter(range(10)), {})  # more jobs than room: the filler waits for room
    filler = gevent.spawn(source.fill)
    gevent.sleep(0.01)
    filler.kill()
    assert source.crash is None and source.error is None
