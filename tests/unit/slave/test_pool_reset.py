"""A RESET in the middle of a batch: what the slave's next report says, in-process.

A master answers RESET when it does not know the slave's run or token; the
slave drops its queue and says hello again.  Often that is a new run (a
restarted master), whose reports must carry nothing of the old one.  But it
can be the same run (the master lost track of this slave's token): the
master took the slave's batches back at its new hello, yet still counts late
acknowledgements of them, so that the jobs the slave finished - before the
RESET, or still running through it - do not run a second time elsewhere.
``forget`` used to drop the batches due for the next report and leave them
marked as reported-pending (``dirty``): their jobs were never acknowledged.
"""

from __future__ import annotations

from taskmaster.slave.pool import LocalBatch, WorkerPool


def pool_holding_a_half_done_batch() -> tuple[WorkerPool, LocalBatch]:
    pool = WorkerPool(lambda job: None, concurrency=1, job_timeout=None)
    batch = LocalBatch(7, "run-1", [[100, 106]], list(range(6)))
    pool.add(batch)
    batch.cursor = 4  # a worker claimed four jobs ...
    pool._run(batch, 0, 2)  # ... two finished before the RESET, not reported yet
    return pool, batch


def test_jobs_finished_around_a_reset_are_acknowledged_when_the_run_goes_on():
    pool, batch = pool_holding_a_half_done_batch()
    pool.forget()  # RESET; the hello that follows joins the same run
    pool._run(batch, 2, 4)  # the two jobs running through the RESET finish
    acks, failures, cuts = pool.take_report("run-1")
    assert acks == [[7, [[100, 104]]]]  # all four: none of them runs again
    assert pool.queued() == 0 and pool.waiting() == []  # the jobs not started went back with the hello


def test_a_new_run_hears_nothing_of_the_old_one():
    pool, batch = pool_holding_a_half_done_batch()
    pool.forget()  # RESET by a restarted master: a new run
    pool._run(batch, 2, 4)
    assert pool.take_report("run-2") == ([], [], [])
    assert not pool.has_unreported()
