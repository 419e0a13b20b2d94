"""One huge run split over several masters: each serves one shard of the keys.

One master's core serves from about 110,000 jobs a second (small batches:
many slaves with slow jobs) to several million (large batches of fast jobs),
and no more than get_jobs yields (see "Sizing a billion-job run",
docs/sizing.rst); past that, or to keep each master near the data it reads, shard
the key space.  Every master runs this same module with
``shard=I shards=S``: its ``get_jobs`` yields only the keys of shard I - a
contiguous slice of ``[0, n)`` - and its slaves handle only those.  Nothing
is shared between the shards: each master has its own slaves, address and
state file, and each shard finishes, fails or resumes on its own.

Eight masters on eight ports of one host (or one per host), each with its
own slaves::

    tm-master --new-secret secret            # once; copy it to every host (scp -p)
    for i in 0 1 2 3 4 5 6 7; do
        tm-master examples/sharded.py shard=$i shards=8 n=1000000000 \\
            --address tcp://10.0.0.5:$((3050 + i)) --secret-file secret --no-progress \\
            --log-file shard-$i.log &
    done

    # on the slave hosts, e.g. 4 hosts per shard (host k serves shard k % 8):
    tm-spawn examples/sharded.py 8 --concurrency 50 \\
        --address tcp://10.0.0.5:$((3050 + k % 8)) --secret-file secret

    # how is shard 3 doing?
    tm-status --address tcp://10.0.0.5:3053 --secret-file secret

The state file name is derived from the target and its ``key=value``
arguments, so each shard checkpoints to a file of its own
(``taskmaster-sharded.py.get_jobs-<hash>.state`` in the directory it
starts in) and an interrupted shard resumes with the same command, from
that directory.  Started side by side there, a shard's master may name
another shard's unfinished state file in a warning at its start: expected.
Keep ``n`` and ``shards`` fixed for the life of a run: other values move
the boundaries, and - being other arguments - start new runs with new
state files.

``python examples/sharded.py shards=8 n=1000000000`` prints the shards'
ranges.

Each key is handled by a trivial idempotent job: it appends the key to the
file named by ``$SHARDED_RECORD`` if set (the test counts them), else
computes a digest of it.  Replace ``handle_job`` with the real work, keyed
by the integer: a row id, a user id, a page number.
"""

from __future__ import annotations

import hashlib
import os
import sys


def bounds(shard: str | int = "0", shards: str | int = "1", n: str | int = "100000") -> tuple[int, int]:
    """The keys [start, stop) of shard `shard` of `shards`: contiguous, together exactly [0, n)."""
    shard, shards, n = int(shard), int(shards), int(n)
    if shards < 1:
        raise ValueError(f"shards={shards}: must be at least 1")
    if not 0 <= shard < shards:
        raise ValueError(f"shard={shard}: must be in 0..{shards - 1} (shards={shards})")
    if n < 0:
        raise ValueError(f"n={n}: must be >= 0")
    return n * shard // shards, n * (shard + 1) // shards


def get_jobs(last=None, shard="0", shards="1", n="100000", **kwargs):
    """The keys of this shard, from `last` (the first one not finished) on a resumed run."""
    start, stop = bounds(shard, shards, n)
    if last is not None:
        last = int(last)
        if not start <= last < stop:
            raise ValueError(f"last={last} is not in shard {shard} of {shards}, keys [{start}, {stop})")
        start = last
    return iter(range(start, stop))


def count_jobs(shard="0", shards="1", n="100000", **kwargs):
    """The shard's size: progress shows percent done and an ETA."""
    start, stop = bounds(shard, shards, n)
    return stop - start


def handle_job(key):
    record = os.environ.get("SHARDED_RECORD")
    if record:
        fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{key}\n".encode())
        finally:
            os.close(fd)
    else:
        hashlib.sha256(str(key).encode()).digest()


def main(argv: list[str]) -> int:
    kwargs = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    shards = int(kwargs.get("shards", "8"))
    n = int(kwargs.get("n", "100000"))
    for shard in range(shards):
        start, stop = bounds(shard, shards, n)
        print(f"shard={shard} shards={shards} n={n}: keys [{start}, {stop}), {stop - start} jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
