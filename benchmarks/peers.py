"""One run of a peer of Taskmaster, in a fresh process; prints one JSON line.

    python benchmarks/peers.py {loop,pool,executor} KIND N [--workers P] [--chunksize C]
                               [--module PATH] [--handler NAME] [key=value ...]

* loop     - ``for job in get_jobs(): handle_job(job)`` in this process;
* pool     - ``multiprocessing.Pool(P).imap_unordered(handle_job, get_jobs(), chunksize=C)``;
* executor - ``concurrent.futures.ProcessPoolExecutor(P).map(handle_job, get_jobs())``
             (which submits every job before yielding the first result).

Without ``--module``, get_jobs and the handler are ``benchmarks/workloads.py``'s
for KIND (``get_jobs(n=N, kind=KIND, **key_values)``).  With ``--module
PATH``, they are that file's ``get_jobs(**key_values)`` and ``--handler``
(default ``handle_job``): the same call ``tm-run PATH P key=value ...``
makes, so both run identical jobs; KIND is then only a label and N the
number of jobs expected.

The JSON line holds the number of jobs handled, the seconds this process spent
from before creating the pool to after its shutdown, and ``ru_maxrss`` of this
process (the one holding the queue: the Pool / Executor parent), in KB.
``run.py`` measures the wall time of the whole process itself.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402  (needs the path above)

Handler = Callable[[object], object]


def run_loop(handle: Handler, jobs: Iterable) -> int:
    count = 0
    for job in jobs:
        handle(job)
        count += 1
    return count


def run_pool(handle: Handler, jobs: Iterable, workers: int, chunksize: int) -> int:
    import multiprocessing

    count = 0
    with multiprocessing.Pool(workers) as pool:
        for _ in pool.imap_unordered(handle, jobs, chunksize=chunksize):
            count += 1
    return count


def run_executor(handle: Handler, jobs: Iterable, workers: int) -> int:
    from concurrent.futures import ProcessPoolExecutor

    count = 0
    with ProcessPoolExecutor(workers) as executor:
        for _ in executor.map(handle, jobs):
            count += 1
    return count


def load(path: str, handler: str) -> tuple[Callable[..., Iterable], Handler]:
    """get_jobs and the handler of the job module at `path`, imported by name (so workers can unpickle them)."""
    path = os.path.abspath(path)
    sys.path.insert(0, os.path.dirname(path))  # as tm-run does: its neighbours import
    module = importlib.import_module(os.path.splitext(os.path.basename(path))[0])
    return module.get_jobs, getattr(module, handler)


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"{text!r} is not key=value")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system", choices=("loop", "pool", "executor"))
    parser.add_argument("kind")
    parser.add_argument("n", type=int)
    parser.add_argument("kwargs", nargs="*", type=key_value, metavar="key=value", help="arguments of get_jobs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--chunksize", type=int, default=1)
    parser.add_argument("--module", metavar="PATH", help="job module (default: workloads.py, by KIND)")
    parser.add_argument("--handler", default="handle_job", help="--module's handler (default: handle_job)")
    args = parser.parse_intermixed_args(argv)
    kwargs = dict(args.kwargs)
    if args.module:
        get_jobs, handle = load(args.module, args.handler)
    elif args.kind in workloads.KINDS:
        get_jobs, handle = workloads.get_jobs, workloads.HANDLERS[args.kind]
        kwargs.update(n=str(args.n), kind=args.kind)
    else:
        parser.error(f"unknown kind {args.kind!r}: use one of {', '.join(workloads.KINDS)}, or --module")
    started = time.perf_counter()
    jobs = get_jobs(**kwargs)
    if args.system == "loop":
        handled = run_loop(handle, jobs)
    elif args.system == "pool":
        handled = run_pool(handle, jobs, args.workers, args.chunksize)
    else:
        handled = run_executor(handle, jobs, args.workers)
    seconds = time.perf_counter() - started
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KB on Linux
    print(json.dumps({"handled": handled, "seconds": seconds, "maxrss_kb": maxrss_kb}), flush=True)
    return 0 if handled == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
