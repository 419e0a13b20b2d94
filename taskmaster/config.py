"""The settings of a master and of a slave, and their defaults: the one place those are written.

The command-line options (``taskmaster.options``), ``tm-run``,
``taskmaster.run`` and code embedding ``Master`` or ``Slave`` all take their
defaults from these classes.  Nothing here imports gevent or zmq: the
commands read it before they monkey-patch.
"""

from __future__ import annotations

from dataclasses import dataclass

from taskmaster.failure_limit import FailureLimit

DEFAULT_ADDRESS = "tcp://127.0.0.1:3050"  # loopback unless told otherwise


@dataclass
class MasterConfig:
    address: str = DEFAULT_ADDRESS
    size: int | None = None  # most jobs held, buffered or in flight; None: the master chooses (taskmaster.window)
    state_path: str = "taskmaster.state"
    failures_path: str = "taskmaster.failures.jsonl"
    reset: bool = False
    retry_failed: bool = False
    lease_timeout: float = 30.0  # seconds a slave may stay silent before its jobs go to others
    max_retries: int = 3
    grace: float = 10.0  # on SIGINT/SIGTERM, seconds for the jobs in flight
    checkpoint_interval: float = 1.0
    progress: bool = True
    total: int | None = None
    linger: float = 3.0  # stay reachable this long after starting, to tell late slaves to quit
    metrics_address: str | None = None  # serve /metrics here (see taskmaster.metrics)
    rate: float | None = None  # --rate: jobs started per second, at most
    max_failures: FailureLimit | None = None  # --max-failures: halt past this
    job_repr: bool = True  # name a job by its repr in logs, not by position alone (--no-job-repr)


@dataclass
class SlaveConfig:
    address: str = DEFAULT_ADDRESS
    concurrency: int = 10
    timeout_ms: int = 2500
    retries: int = 3
    job_timeout: float | None = None
    grace: float = MasterConfig.grace  # one --grace for both
    progress: bool = True
    job_repr: bool = MasterConfig.job_repr  # one --no-job-repr for both
    # Seconds to keep trying to reach the master before giving up (0: for
    # ever); None: --retries tries of --timeout.  On a cluster engine slaves
    # may come up long before their master, or while it restarts.
    wait_for_master: float | None = None
    # Started with its master by tm-run or taskmaster.run, which stops the
    # slaves if that master dies: wait for it for ever (it may take long to
    # start, e.g. a slow count_jobs), and quit when told to - no other master
    # will come after it.
    beside_master: bool = False
