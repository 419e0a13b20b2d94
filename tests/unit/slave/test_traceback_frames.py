"""A failed job's traceback starts at the user's code, not in Taskmaster's worker.

What a user reads in the failures file is where *their* handler went wrong;
the worker frames above it are the same for every failure and only push
the useful lines out of view.
"""

from __future__ import annotations

import os

import taskmaster
from taskmaster.slave.pool import LocalBatch, WorkerPool

PACKAGE_DIR = os.path.dirname(os.path.abspath(taskmaster.__file__))


def _helper(job):
    raise ValueError(f"job {job} fails on purpose")


def handle_job(job):
    _helper(job)


def frame_files(text: str) -> list[str]:
    return [line.split('"')[1] for line in text.splitlines() if line.startswith('  File "')]


def test_the_recorded_traceback_starts_in_the_users_handler():
    pool = WorkerPool(handle_job, concurrency=1, job_timeout=None)
    batch = LocalBatch(1, "run", [[0, 3]], [0, 1, 2])
    pool._run(batch, 0, 3)
    failures = [failure for _, failure in pool.failures]
    assert len(failures) == 3
    for failure in failures:
        text = failure.traceback
        assert text.startswith("Traceback (most recent call last):\n"), text
        files = frame_files(text)
        assert files == [__file__, __file__], text  # handle_job, then _helper: nothing of Taskmaster's
        assert text.splitlines()[1].endswith(", in handle_job"), text
        assert text.rstrip().endswith("fails on purpose"), text


def test_taskmaster_code_the_handler_calls_stays_in_the_traceback():
    def raises_in_taskmaster(job):
        LocalBatch(0, "run", [], []).position(5)  # an IndexError inside Taskmaster's own code

    pool = WorkerPool(raises_in_taskmaster, concurrency=1, job_timeout=None)
    pool._run(LocalBatch(1, "run", [[0, 1]], [0]), 0, 1)
    [(_, failure)] = pool.failures
    assert frame_files(failure.traceback)[0] == __file__
    assert any(f.startswith(PACKAGE_DIR) for f in frame_files(failure.traceback))
