"""tm-spawn: N slave processes, each with its own greenlet pool."""

from __future__ import annotations

from taskmaster.cli import common

DESCRIPTION = """\
Start N tm-slave processes for TARGET, each with its own greenlet pool.
Exits when all of them have exited: 0 if they all did, otherwise the
first non-zero code.  SIGINT and SIGTERM are passed on to them.
"""

SLAVE_FLAGS = common.SLAVE_OPTIONS + common.SHARED_OPTIONS + common.COMMON_OPTIONS


def build_parser(prog: str = "tm-spawn") -> common.Parser:
    parser = common.new_parser(prog, DESCRIPTION)
    parser.add_argument("target", metavar="TARGET", help="where handle_job lives")
    parser.add_argument("processes", type=common.positive_int, metavar="N", help="number of slave processes")
    common.add_address(parser)
    common.add_options(parser, SLAVE_FLAGS)
    return parser


def main(argv: list[str] | None = None, prog: str = "tm-spawn") -> int:
    parser = build_parser(prog)
    args = parser.parse_intermixed_args(argv)
    common.check_log_level(parser, args.log_level)

    def body() -> int:
        from taskmaster.cli import slave
        from taskmaster.launch import fork, target
        from taskmaster.launch.supervisor import Supervisor, exit_code

        # For our own lines (an error before the slaves start); the --log-file is the slaves'.
        common.setup_logging(args.log_level, "spawn", None, args.log_format)

        module, function = target.split(args.target, "handle_job")
        slave_args = [f"{module}:{function}", "--address", args.address, *common.to_argv(args, SLAVE_FLAGS)]
        # Every setting is on the children's command lines: none from variables.
        child_env = common.child_environment(parser)
        # The slaves are forked from here, the imports done once (see taskmaster.launch.fork).
        fork.preload(monkey_patch=not args.no_monkey_patch)
        supervisor = Supervisor()
        supervisor.forward_signals()
        try:
            fork.fork_children(
                supervisor,
                [(slave.main, slave_args, "tm-slave")] * args.processes,
                child_env,
                lambda: target.load(args.target, "handle_job"),  # a bad target: one message, not N
            )
            supervisor.wait(supervisor.children)
        finally:
            supervisor.stop(supervisor.children, timeout=5)  # after a bad target or an interruption
        codes = [exit_code(child.returncode) for child in supervisor.children]
        # Every slave reaped: end now, without the teardown.
        fork.end_process(next((code for code in codes if code != 0), 0))

    common.run_command(prog, body)


if __name__ == "__main__":
    main()
