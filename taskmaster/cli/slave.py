"""tm-slave: run TARGET's handle_job on the jobs a master hands out."""

from __future__ import annotations

import argparse

from taskmaster.cli import common

DESCRIPTION = """\
Connect to a master and run TARGET's handle_job on its jobs in a pool of
gevent greenlets.  TARGET is package.module, package.module:function,
path/to/file.py or path/to/file.py:function; the function defaults to
handle_job.
"""


def build_parser(prog: str = "tm-slave") -> common.Parser:
    parser = common.new_parser(prog, DESCRIPTION)
    parser.add_argument("target", metavar="TARGET", help="where handle_job lives")
    common.add_address(parser)
    common.add_options(parser, common.SLAVE_OPTIONS + common.SHARED_OPTIONS + common.COMMON_OPTIONS)
    # Given by tm-run and taskmaster.run to the slaves they start with their master (SlaveConfig.beside_master).
    parser.add_argument("--beside-master", action="store_true", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None, prog: str = "tm-slave") -> int:
    parser = build_parser(prog)
    args = parser.parse_intermixed_args(argv)
    common.check_log_level(parser, args.log_level)

    def body() -> int:
        common.monkey_patch(args.no_monkey_patch)
        from taskmaster.launch import target
        from taskmaster.slave.core import Slave, SlaveConfig
        from taskmaster.wire import security

        keys = security.keys_for(args.secret_file, args.insecure, args.address)
        handle_job = target.load(args.target, "handle_job")
        config = SlaveConfig(
            address=args.address,
            concurrency=args.concurrency,
            timeout_ms=args.timeout,
            retries=args.retries,
            job_timeout=args.job_timeout,
            wait_for_master=args.wait_for_master,
            beside_master=args.beside_master,
            grace=args.grace,
            progress=not args.no_progress,
            job_repr=not args.no_job_repr,
        )
        slave = Slave(handle_job, config, keys)
        common.setup_logging(args.log_level, "slave", args.log_file, args.log_format, slave.id)
        code = slave.run()
        if slave.error:
            common.say(prog, slave.error, error=True, logger="taskmaster.slave", exit_code=code)
        return code

    common.run_command(prog, body)


if __name__ == "__main__":
    main()
