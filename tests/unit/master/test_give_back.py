"""Moving jobs a slave has not started, in-process: the master's books and the slave's cut.

The master side: a batch cut by a give-back keeps only its head; the tail
goes back to the queue once, however often the same cut is reported; a lease
that runs out afterwards takes back only the head; acknowledgements count a
job once.  The slave side: the pool cuts only jobs it has not started, from
the tail, under the lock its workers claim jobs with.
"""

from __future__ import annotations

import threading

from taskmaster.master.ledger import Ledger
from taskmaster.master.registry import SlaveRegistry
from taskmaster.slave.pool import LocalBatch, WorkerPool


def registry_with_batch(n: int = 10):
    ledger = Ledger(100, stretch=1)
    ledger.add(list(range(n)))
    registry = SlaveRegistry(ledger, lease_timeout=30)
    a = registry.join("a", "host", 1, 1, 2500, b"A", now=0.0)
    b = registry.join("b", "host", 2, 1, 2500, b"B", now=0.0)
    jobs, ranges = ledger.take(n, "a", alone=False)
    batch = registry.hand_out(a, ranges)
    return ledger, registry, a, b, batch


def test_a_give_back_requeues_the_tail_once_and_keeps_the_head():
    ledger, registry, a, _, batch = registry_with_batch(10)
    assert registry.unstarted(a) == 10  # handed, not reported yet: all of it waits
    assert registry.give_back(a, batch, 4) == 6
    assert registry.give_back(a, batch, 4) == 0  # the same cut again (GIVEBACK, then the report)
    assert registry.held(a) == 4
    jobs, ranges = ledger.take(100, "b", alone=False)
    assert jobs == [4, 5, 6, 7, 8, 9] and ranges == [[4, 10]]
    assert ledger.take(100, "b", alone=False)[0] == []  # not queued twice


def test_a_cut_can_only_shrink_a_batch():
    ledger, registry, a, _, batch = registry_with_batch(10)
    registry.give_back(a, batch, 4)
    assert registry.give_back(a, batch, 7) == 0  # a stale, larger cut changes nothing
    assert registry.give_back(a, batch + 99, 0) == 0  # not a batch of this slave
    assert registry.held(a) == 4


def test_a_lease_lost_after_a_give_back_takes_back_only_the_head():
    ledger, registry, a, b, batch = registry_with_batch(10)
    registry.give_back(a, batch, 4)
    tail_jobs, tail_ranges = ledger.take(100, "b", alone=False)
    registry.hand_out(b, tail_ranges)
    registry.seen(b, 100.0)
    registry.expire(now=100.0)  # a is silent past its lease; b is not
    assert a.lost and not b.lost
    jobs, _ = ledger.take(100, "b", alone=False)
    assert jobs == [0, 1, 2, 3]  # b's jobs stay b's


def test_acknowledgements_count_each_job_once_and_settle_the_batch():
    ledger, registry, a, b, batch = registry_with_batch(10)
    registry.give_back(a, batch, 4)
    assert ledger.mark_done([(0, 4)]) == 4
    registry.settle(a, batch)
    assert batch not in a.batches
    assert ledger.mark_done([(0, 4)]) == 0
    assert ledger.low == 4  # the given-back tail is still to do


def test_recall_picks_the_largest_backlog_and_asks_for_half():
    ledger, registry, a, b, batch = registry_with_batch(10)
    assert registry.recall_from(b, now=1.0) is None  # a's liveness thread has not spoken: no address
    registry.hello(a, b"A-beat", b"")
    victim, want = registry.recall_from(b, now=1.0)
    assert victim is a and want == 5
    assert registry.recall_from(b, now=1.0) is None  # asked a moment ago: not again yet


def pool_with(jobs_per_batch: list[int]) -> WorkerPool:
    pool = WorkerPool(lambda job: None, concurrency=1, job_timeout=None)
    for i, n in enumerate(jobs_per_batch):
        pool.add(LocalBatch(i + 1, "run", [[100 * i, 100 * i + n]], list(range(n))))
    return pool


def test_the_pool_cuts_only_jobs_not_started_from_the_tail():
    pool = pool_with([4, 3])
    pool.todo[0].cursor = 2  # two jobs of the first batch started
    cuts, queue = pool.give_back(4)
    assert cuts == [[2, 0], [1, 3]]  # all of the second batch, then one off the first
    assert queue == [[1, 2, 3]]
    assert pool.queued() == 1
    cuts, queue = pool.give_back(10)
    assert cuts == [[1, 2]] and queue == []
    assert pool.give_back(10) == ([], [])
    acks, failures, reported_cuts = pool.take_report("run")
    assert reported_cuts == [[2, 0], [1, 3], [1, 2]]  # they ride on the next report as well


def test_a_cut_from_another_thread_never_takes_a_claimed_job():
    """Claims (as the workers make them) race a thread cutting the tail: every job goes one way."""
    pool = pool_with([20000])
    batch = pool.todo[0]
    claimed: list[int] = []
    given: list[int] = []

    def cutter():
        while True:
            cuts, _ = pool.give_back(3)
            if not cuts:
                if batch.cursor >= batch.end:
                    return
                continue
            given.append(cuts[0][1])

    thread = threading.Thread(target=cutter)
    thread.start()
    while True:
        with pool.claim_lock:  # exactly what a worker does to claim
            start, end = batch.cursor, min(batch.cursor + 2, batch.end)
            batch.cursor = end
        if start >= end:
            break
        claimed.extend(range(start, end))
    thread.join(10)
    assert claimed == list(range(len(claimed)))  # the head, in order, once each
    assert batch.end == len(claimed)  # everything past it was given back
    assert given and min(given) == len(claimed)


def test_a_recall_of_everything_also_gives_back_a_batch_still_on_its_way():
    pool = pool_with([3])
    cuts, _ = pool.give_back(10_000, upto=2)  # the master had handed out batches up to 2
    assert cuts == [[1, 0]]
    pool.add(LocalBatch(2, "run", [[100, 105]], list(range(5))))  # batch 2 arrives after the recall
    assert pool.queued() == 0  # none of it will start
    pool.add(LocalBatch(3, "run", [[200, 202]], [0, 1]))  # handed out after it (resumed): runs
    assert pool.queued() == 2
    assert pool.take_report("run")[2] == [[1, 0], [2, 0]]


def test_a_job_that_failed_here_and_waits_for_a_retry_is_not_held():
    ledger, registry, a, _, batch = registry_with_batch(10)
    assert registry.held(a) == 10
    ledger.retry(3, "a")  # its attempt on a failed; it waits in the queue for another try
    registry.failed_here(a, batch, 3)
    assert registry.held(a) == 9
    ledger.mark_failed(3)  # failed for good (elsewhere): resolved, still not held
    assert registry.held(a) == 9
