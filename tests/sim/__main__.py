"""python -m tests.sim: run seeds of the simulation; each failure is printed as the command that replays it.

    python -m tests.sim --seed 12345 --verbose      # replay one seed, with its trace
    python -m tests.sim --seeds 100000 --start 0    # a long search
"""

from __future__ import annotations

import argparse
import sys
import time

from . import invariants
from .world import simulate


def replay_command(seed: int, changing: bool, size_check: bool, job_timeouts: bool = True) -> str:
    flags = (" --iterators all" if changing else "") + ("" if size_check else " --no-size-check")
    flags += "" if job_timeouts else " --no-job-timeouts"
    return f"python -m tests.sim --seed {seed}{flags} --verbose"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, help="run this one seed")
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run (default 100)")
    parser.add_argument("--start", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument(
        "--iterators",
        choices=("stable", "all"),
        default="stable",
        help="stable: get_jobs yields the same jobs in the same order on every open; "
        "all: also iterators whose jobs vanish, reorder or appear between runs",
    )
    parser.add_argument(
        "--no-size-check", action="store_true", help="do not check that the master holds at most --size jobs"
    )
    parser.add_argument(
        "--no-job-timeouts", action="store_true", help="no --job-timeout in any seed (else one seed in four has one)"
    )
    parser.add_argument("--verbose", action="store_true", help="print the trace of the events (with --seed)")
    args = parser.parse_args(argv)
    changing = args.iterators == "all"
    size_check = invariants.SIZE_IS_A_BOUND and not args.no_size_check
    timeouts = not args.no_job_timeouts
    if args.seed is not None:
        result = simulate(args.seed, changing, size_check, verbose=args.verbose, job_timeouts=timeouts)
        if args.verbose:
            print("\n".join(result.trace))
        print(
            f"seed {result.seed} ({result.kind} iterator): {result.error or 'ok'} "
            f"[trace {result.digest}, {result.events} events, {result.end_time:.2f}s simulated]"
        )
        return 1 if result.error else 0
    failures = 0
    began = time.monotonic()
    for seed in range(args.start, args.start + args.seeds):
        result = simulate(seed, changing, size_check, job_timeouts=timeouts)
        if result.error:
            failures += 1
            print(f"{replay_command(seed, changing, size_check, timeouts)}  # {result.error}", flush=True)
    elapsed = time.monotonic() - began
    print(f"{args.seeds} seeds from {args.start}: {failures} failed ({elapsed:.1f}s)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
