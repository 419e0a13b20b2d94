"""tm-run: a master and N slaves on this host, in one command."""

from __future__ import annotations

from taskmaster.cli import common

DESCRIPTION = """\
Run a master and N slave processes on this host for SCRIPT (a
path/to/file.py or package.module defining get_jobs and handle_job;
no :function - name them with --get-jobs-callback and --handle-job-callback).
Each key=value goes to get_jobs.  Exits with the master's exit code when
the run is over, leaving no process behind.  Unless --address is given,
master and slaves talk over a private ipc:// socket in a fresh directory
only you can read.
"""


def build_parser(prog: str = "tm-run") -> common.Parser:
    parser = common.new_parser(prog, DESCRIPTION)
    parser.add_argument("script", metavar="SCRIPT", help="path/to/file.py or package.module (no :function)")
    parser.add_argument("processes", type=common.positive_int, metavar="N", help="number of slave processes")
    parser.add_argument("kwargs", nargs="*", metavar="key=value", help="keyword arguments for get_jobs")
    parser.add_argument(
        "--get-jobs-callback",
        default="get_jobs",
        metavar="NAME",
        help="name of the function that yields jobs (default: get_jobs)",
    )
    parser.add_argument(
        "--handle-job-callback",
        default="handle_job",
        metavar="NAME",
        help="name of the function that handles one job (default: handle_job)",
    )
    common.add_address(parser, default=None)
    common.add_options(parser, common.MASTER_OPTIONS, "master options")
    common.add_options(parser, common.SLAVE_OPTIONS, "slave options")
    common.add_options(parser, common.SHARED_OPTIONS + common.COMMON_OPTIONS, "master and slave options")
    return parser


def main(argv: list[str] | None = None, prog: str = "tm-run") -> int:
    parser = build_parser(prog)
    args = parser.parse_intermixed_args(argv)
    common.check_log_level(parser, args.log_level)

    def body() -> int:
        from taskmaster.cli import master, slave
        from taskmaster.launch import fork, local, target

        # For our own lines (an error before the run starts); the --log-file is the master's.
        common.setup_logging(args.log_level, "run", None, args.log_format)

        kwargs = target.parse_kwargs(args.kwargs)
        result = local.launch(
            args.script,
            args.processes,
            kwargs,
            vars(args),
            args.get_jobs_callback,
            args.handle_job_callback,
            args.address,
            fork=fork.Commands(master=master.main, slave=slave.main),
        )
        for problem in result.problems:
            common.say(prog, problem, error=True)
        # The run is over and every child reaped: end now, without the teardown.
        fork.end_process(result.exit_code)

    common.run_command(prog, body)


if __name__ == "__main__":
    main()
