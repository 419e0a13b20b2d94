"""tm-master: serve the jobs of get_jobs to slaves, with a checkpoint."""

from __future__ import annotations

import json
import sys
from typing import Any

from taskmaster import fileio
from taskmaster.cli import common

DESCRIPTION = """\
Pull jobs from TARGET's get_jobs into a bounded buffer and serve them to
slaves (tm-slave, tm-spawn); checkpoint progress so that running the same
command again resumes an interrupted run.

TARGET is package.module, package.module:function, path/to/file.py or
path/to/file.py:function; the function defaults to get_jobs.  Each
key=value is passed to it as a keyword argument (a string).
"""


def build_parser(prog: str = "tm-master") -> common.Parser:
    parser = common.new_parser(prog, DESCRIPTION)
    parser.add_argument("target", metavar="TARGET", help="where get_jobs lives")
    parser.add_argument("kwargs", nargs="*", metavar="key=value", help="keyword arguments for get_jobs")
    common.add_address(parser)
    common.add_options(parser, common.MASTER_OPTIONS + common.SHARED_OPTIONS + common.COMMON_OPTIONS)
    return parser


def write_result(path: str, outcome: Any) -> None:
    result = {
        "exit_code": outcome.code,
        "finished": outcome.finished,
        "failed": outcome.failed,
        "duration": outcome.duration,
        "served": outcome.served,
        "over": outcome.over,
        "summary": outcome.summary,
        "error": outcome.error,
    }
    # Private (0600) and atomic: a link planted at `path` is replaced, never written through.
    fileio.write_atomically(path, json.dumps(result).encode())


def new_secret(argv: list[str], prog: str) -> int:
    """tm-master --new-secret PATH: write a fresh secret file, mode 0600."""
    parser = common.new_parser(prog, "Create a secret file for --secret-file.")
    parser.add_argument("--new-secret", required=True, metavar="PATH", help="where to write the new secret")

    def body() -> int:
        from taskmaster.wire import secretfile

        args = parser.parse_intermixed_args(argv)
        secretfile.new_secret_file(args.new_secret)
        sys.stderr.write(
            f"{prog}: wrote a new secret to {args.new_secret} (mode 0600); copy it to every slave host "
            "(e.g. scp -p) and pass --secret-file to every command\n"
        )
        return 0

    common.run_command(prog, body)


def main(argv: list[str] | None = None, prog: str = "tm-master") -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg == "--new-secret" or arg.startswith("--new-secret=") for arg in argv):
        return new_secret(argv, prog)
    parser = build_parser(prog)
    args = parser.parse_intermixed_args(argv)
    common.check_log_level(parser, args.log_level)

    def body() -> int:
        from taskmaster.launch import target  # no I/O library: safe before the patching

        kwargs = target.parse_kwargs(args.kwargs)  # bad arguments fail before anything else happens
        common.monkey_patch(args.no_monkey_patch)
        common.setup_logging(args.log_level, "master", args.log_file, args.log_format)
        from taskmaster.config import MasterConfig
        from taskmaster.master import checkpoint, failures_file
        from taskmaster.master.process import Master  # the core's Master, run as a real process
        from taskmaster.wire import security

        keys = security.keys_for(args.secret_file, args.insecure, args.address)
        get_jobs = target.load(args.target, "get_jobs")
        target_id = target.identity(args.target, "get_jobs")
        state_path = args.state_file or checkpoint.default_path(target_id, kwargs)
        config = MasterConfig(
            address=args.address,
            size=args.size,
            state_path=state_path,
            failures_path=args.failures_file or failures_file.default_path(state_path),
            reset=args.reset,
            retry_failed=args.retry_failed,
            lease_timeout=args.lease_timeout,
            max_retries=args.max_retries,
            grace=args.grace,
            progress=not args.no_progress,
            total=args.total,
            linger=args.linger,
            checkpoint_interval=args.checkpoint_every,
            metrics_address=args.metrics_address,
            rate=args.rate,
            max_failures=args.max_failures,
            job_repr=not args.no_job_repr,
        )
        count_jobs = target.optional(args.target, "count_jobs")
        outcome = Master(get_jobs, target_id, kwargs, config, keys, count_jobs).run()
        counts = {
            "finished": outcome.finished,
            "failed": outcome.failed,
            "exit_code": outcome.code,
            "seconds": round(outcome.duration, 3),
        }
        if outcome.summary:
            if args.log_format == "json":
                common.say(prog, outcome.summary, logger="taskmaster.master", event="summary", **counts)
            else:
                sys.stderr.write(f"{prog}: {outcome.summary}\n")
                common.log_to_file("taskmaster.master", f"summary: {outcome.summary}")
        if outcome.error:
            common.say(prog, outcome.error, error=True, logger="taskmaster.master", **counts)
        if args.result_file:
            write_result(args.result_file, outcome)
        return outcome.code

    common.run_command(prog, body)


if __name__ == "__main__":
    main()
