"""The slave registry's leases, in-process, on a clock the test moves."""

from __future__ import annotations

from taskmaster.master.ledger import Ledger
from taskmaster.master.registry import FORGET_AFTER_LEASES, Batch, SlaveRegistry

LEASE = 30.0


def setup(jobs: int = 10) -> tuple[Ledger, SlaveRegistry]:
    ledger = Ledger(100)
    ledger.add(list(range(jobs)))
    return ledger, SlaveRegistry(ledger, LEASE)


def give(registry: SlaveRegistry, ledger: Ledger, slave, n: int) -> int:
    _, ranges = ledger.take(n, slave.id, alone=False)
    return registry.hand_out(slave, ranges)


def test_a_silent_slave_loses_its_jobs_after_its_lease_and_not_before():
    ledger, registry = setup()
    a = registry.join("a", "h", 1, 2, 1000, b"a", now=0.0)
    b = registry.join("b", "h", 2, 2, 1000, b"b", now=0.0)
    give(registry, ledger, a, 4)
    registry.seen(b, LEASE)
    assert registry.expire(LEASE) == [] and registry.held(a) == 4, "expired at exactly its lease"
    registry.seen(b, LEASE + 1)
    assert registry.expire(LEASE + 1) == [a]
    assert a.lost and not a.live and registry.in_flight() == 0
    jobs, _ = ledger.take(10, "b", alone=False)
    assert jobs[:4] == [0, 1, 2, 3], "the lost slave's jobs go out first"


def test_hearing_from_a_slave_renews_its_lease_and_brings_it_back():
    ledger, registry = setup()
    a = registry.join("a", "h", 1, 2, 1000, b"a", now=0.0)
    give(registry, ledger, a, 2)
    registry.seen(a, 20.0)
    assert registry.expire(45.0) == [] and registry.held(a) == 2
    registry.expire(60.0)
    assert a.lost
    registry.seen(a, 61.0)
    assert a.live, "a slave heard from again is back"


def test_jobs_finished_by_a_lost_slave_still_count_once():
    ledger, registry = setup()
    a = registry.join("a", "h", 1, 2, 1000, b"a", now=0.0)
    batch = give(registry, ledger, a, 3)
    registry.expire(LEASE + 1)
    b = registry.join("b", "h", 2, 2, 1000, b"b", now=LEASE + 1)
    give(registry, ledger, b, 3)
    assert ledger.mark_done(a.batches[batch].ranges) == 3, "the first acknowledgement wins"
    assert ledger.mark_done([(0, 3)]) == 0, "and the second changes nothing"
    assert ledger.finished == 3


def test_a_departed_slave_is_forgotten_after_enough_leases():
    ledger, registry = setup()
    a = registry.join("a", "h", 1, 2, 1000, b"a", now=0.0)
    registry.leave(a)
    registry.expire(FORGET_AFTER_LEASES * LEASE)
    assert registry.get("a") is not None
    registry.expire(FORGET_AFTER_LEASES * LEASE + 1)
    assert registry.get("a") is None


def test_a_second_hello_under_one_id_takes_back_what_the_first_held():
    ledger, registry = setup()
    a = registry.join("a", "h", 1, 2, 1000, b"a", now=0.0)
    give(registry, ledger, a, 5)
    again = registry.join("a", "h", 1, 2, 1000, b"a2", now=1.0)
    assert again is not a and again.token != a.token
    assert registry.held(again) == 0 and ledger.undispatched() == 10


def test_a_retry_whose_slave_is_lost_goes_out_once_not_twice():
    """Found by the property test: the retry was queued once for the failure and
    again with the lost slave's batch, and the next batch carried the job twice
    under one position, so the slave's jobs and positions no longer matched."""
    ledger, registry = setup(jobs=1)
    a = registry.join("a", "h", 1, 2, 1000, b"a", now=0.0)
    give(registry, ledger, a, 1)
    ledger.attempts[0] = 1
    ledger.retry(0, "a")
    registry.leave(a)
    jobs, ranges = ledger.take(5, "b", alone=True)
    assert (jobs, ranges) == ([0], [[0, 1]])


def test_an_acknowledgement_naming_one_batch_many_times_reads_its_ranges_once():
    """One ACK may name a batch thousands of times: its ranges' starts are found once, not per mention."""

    class CountedRanges(list):
        walks = 0

        def __iter__(self):
            CountedRanges.walks += 1
            return super().__iter__()

    ranges = CountedRanges([[2 * i, 2 * i + 1] for i in range(20000)])
    batch = Batch(1, ranges, 20000)
    assert all(batch.covers([(2 * i, 2 * i + 1)]) for i in range(0, 20000, 2))
    assert not batch.covers([(1, 2)])
    assert CountedRanges.walks == 1
