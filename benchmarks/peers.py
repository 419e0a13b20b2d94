"""One run of a peer of Taskmaster, in a fresh process; prints one JSON line.

    python benchmarks/peers.py {loop,pool,executor} {noop,io,payload} N [--workers P] [--chunksize C]

* loop     - ``for job in get_jobs(): handle_job(job)`` in this process;
* pool     - ``multiprocessing.Pool(P).imap_unordered(handle_job, get_jobs(), chunksize=C)``;
* executor - ``concurrent.futures.ProcessPoolExecutor(P).map(handle_job, get_jobs())``
             (which submits every job before yielding the first result).

The JSON line holds the number of jobs handled, the seconds this process spent
from before creating the pool to after its shutdown, and ``ru_maxrss`` of this
process (the one holding the queue: the Pool / Executor parent), in KB.
``run.py`` measures the wall time of the whole process itself.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402  (needs the path above)


def run_loop(kind: str, n: int) -> int:
    handle = workloads.HANDLERS[kind]
    count = 0
    for job in workloads.get_jobs(n=str(n), kind=kind):
        handle(job)
        count += 1
    return count


def run_pool(kind: str, n: int, workers: int, chunksize: int) -> int:
    import multiprocessing

    count = 0
    with multiprocessing.Pool(workers) as pool:
        for _ in pool.imap_unordered(workloads.HANDLERS[kind], workloads.get_jobs(n=str(n), kind=kind),
                                     chunksize=chunksize):
            count += 1
    return count


def run_executor(kind: str, n: int, workers: int) -> int:
    from concurrent.futures import ProcessPoolExecutor

    count = 0
    with ProcessPoolExecutor(workers) as executor:
        for _ in executor.map(workloads.HANDLERS[kind], workloads.get_jobs(n=str(n), kind=kind)):
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=("loop", "pool", "executor"))
    parser.add_argument("kind", choices=workloads.KINDS)
    parser.add_argument("n", type=int)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--chunksize", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.system == "loop":
        handled = run_loop(args.kind, args.n)
    elif args.system == "pool":
        handled = run_pool(args.kind, args.n, args.workers, args.chunksize)
    else:
        handled = run_executor(args.kind, args.n, args.workers)
    seconds = time.perf_counter() - started
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    print(json.dumps({"handled": handled, "seconds": seconds, "maxrss_kb": maxrss_kb}), flush=True)
    return 0 if handled == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
