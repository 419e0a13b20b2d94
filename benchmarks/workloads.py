"""Job modules for the benchmark: one get_jobs, five handlers.

Used both as a Taskmaster script (``tm-run benchmarks/workloads.py ...
kind=noop n=1000000``) and, imported, by the peers in ``peers.py``.

* noop      - integer jobs, the handler does nothing;
* io        - integer jobs, the handler sleeps 10 ms with ``time.sleep`` (in a
              Taskmaster slave that is gevent's cooperative sleep, because the
              slave monkey-patches before importing this module);
* payload   - every job is its own 5 KB ``bytes`` object (a distinct object per
              job, so pickle cannot share one copy across a batch);
* cpu       - jobs ``(i, loops)``: ``handle_cpu`` spins ``loops`` times in pure
              Python and never yields (``loops=`` comes from the caller, who
              calibrated it to a duration: see ``loops_per_second``);
* lognormal - the same, with ``loops`` drawn per job from a lognormal of mean
              ``loops`` (``sigma=``, default 1), seeded with the job's index:
              the same durations in every run and every system;
* sleep     - integer jobs, ``handle_sleep`` sleeps 20 ms with ``time.sleep``:
              a blocking call in Pool workers and in slaves run with
              ``--no-monkey-patch`` (like a C database driver).
"""

from __future__ import annotations

import math
import random
import statistics
import time

PAYLOAD_BYTES = 5 * 1024
IO_SECONDS = 0.01
SLEEP_SECONDS = 0.02
KINDS = ("noop", "io", "payload", "cpu", "lognormal", "sleep")
_PAD = b"x" * (PAYLOAD_BYTES - 8)


def _payload(i: int) -> bytes:
    return i.to_bytes(8, "little") + _PAD


def _position(last) -> int:
    """Where a resumed run starts: ``last`` is the first job not finished."""
    if isinstance(last, (bytes, bytearray)):
        return int.from_bytes(last[:8], "little")
    if isinstance(last, (tuple, list)):  # cpu, lognormal: (i, loops)
        return int(last[0])
    return int(last)


def lognormal_loops(i: int, mean_loops: int, sigma: float) -> int:
    """Job i's loop count: lognormal with mean `mean_loops`, the same for every run (seeded with i)."""
    return max(1, round(mean_loops * random.Random(i).lognormvariate(-sigma * sigma / 2, sigma)))


def get_jobs(last=0, n="1000", kind="noop", loops="0", sigma="1", **kwargs):
    start, stop = _position(last), int(n)
    if kind == "payload":
        return (_payload(i) for i in range(start, stop))
    if kind == "cpu":
        return ((i, int(loops)) for i in range(start, stop))
    if kind == "lognormal":
        mean, spread = int(loops), float(sigma)
        return ((i, lognormal_loops(i, mean, spread)) for i in range(start, stop))
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    return iter(range(start, stop))


def handle_job(job):
    """noop and payload: nothing to do."""


def handle_io(job):
    time.sleep(IO_SECONDS)


def spin(loops: int) -> int:
    """Pure-Python work, about `loops` x 30 ns; holds the GIL and never yields."""
    x = 0
    for k in range(loops):
        x = (x + k) & 0xFFFF
    return x


def handle_cpu(job):
    """cpu and lognormal: job is (i, loops)."""
    spin(job[1])


def handle_sleep(job):
    time.sleep(SLEEP_SECONDS)


def loops_per_second(probe: float = 0.05, tries: int = 7) -> float:
    """How many spin() loops this interpreter runs per second: the median of a few probes of about `probe` s.

    The median, not the best: on a shared machine the jobs will not all run
    at the best speed either.
    """
    loops = 10_000
    while True:  # grow the probe until it takes long enough to time
        started = time.perf_counter()
        spin(loops)
        took = time.perf_counter() - started
        if took >= probe / 4:
            break
        loops *= 4
    loops = max(loops, math.ceil(loops * probe / took))
    times = []
    for _ in range(tries):
        started = time.perf_counter()
        spin(loops)
        times.append(time.perf_counter() - started)
    return loops / statistics.median(times)


HANDLERS = {"noop": handle_job, "io": handle_io, "payload": handle_job, "cpu": handle_cpu, "lognormal": handle_cpu,
            "sleep": handle_sleep}
