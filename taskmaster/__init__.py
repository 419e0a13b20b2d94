"""Taskmaster: run huge numbers of one-off jobs from a resumable iterator.

A master pulls jobs from the user's ``get_jobs`` iterator into a bounded
buffer and serves them in batches over ZeroMQ to slaves that run the user's
``handle_job`` in gevent greenlet pools; a checkpoint lets an interrupted run
resume where it stopped.

From Python::

    import taskmaster
    result = taskmaster.run("jobs.py", processes=4, job_args={"rows": 1000}, size=10000)
    print(result.finished, result.failed, result.duration)

The classes behind the commands (``Master``, ``MasterConfig``, ``Slave``,
``SlaveConfig``) are importable from here for embedding; they are loaded on
first use, so ``import taskmaster`` alone does not import gevent or zmq.
"""

from __future__ import annotations

from typing import Any

__version__ = "1.0.0"

_LAZY = {
    "run": "taskmaster.launch.local",
    "RunResult": "taskmaster.launch.local",
    "Master": "taskmaster.master.process",
    "MasterConfig": "taskmaster.config",
    "Outcome": "taskmaster.master.outcome",
    "Slave": "taskmaster.slave.core",
    "SlaveConfig": "taskmaster.config",
    "UsageError": "taskmaster.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'taskmaster' has no attribute {name!r}")
