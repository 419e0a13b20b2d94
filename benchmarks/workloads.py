"""Job modules for the benchmark: one get_jobs, three handlers.

Used both as a Taskmaster script (``tm-run benchmarks/workloads.py ...
kind=noop n=1000000``) and, imported, by the peers in ``peers.py``.

* noop    - integer jobs, the handler does nothing;
* io      - integer jobs, the handler sleeps 10 ms with ``time.sleep`` (in a
            Taskmaster slave that is gevent's cooperative sleep, because the
            slave monkey-patches before importing this module);
* payload - every job is its own 5 KB ``bytes`` object (a distinct object per
            job, so pickle cannot share one copy across a batch).
"""

from __future__ import annotations

import time

PAYLOAD_BYTES = 5 * 1024
IO_SECONDS = 0.01
KINDS = ("noop", "io", "payload")
_PAD = b"x" * (PAYLOAD_BYTES - 8)


def _payload(i: int) -> bytes:
    return i.to_bytes(8, "little") + _PAD


def _position(last) -> int:
    """Where a resumed run starts: ``last`` is the first job not finished."""
    if isinstance(last, (bytes, bytearray)):
        return int.from_bytes(last[:8], "little")
    return int(last)


def get_jobs(last=0, n="1000", kind="noop", **kwargs):
    start, stop = _position(last), int(n)
    if kind == "payload":
        return (_payload(i) for i in range(start, stop))
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    return iter(range(start, stop))


def handle_job(job):
    """noop and payload: nothing to do."""


def handle_io(job):
    time.sleep(IO_SECONDS)


HANDLERS = {"noop": handle_job, "io": handle_io, "payload": handle_job}
