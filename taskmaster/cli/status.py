"""tm-status: ask a running master how the run is going."""

from __future__ import annotations

import json
import sys

from taskmaster.cli import common
from taskmaster.errors import UsageError

DESCRIPTION = """\
Ask the master at --address how its run is going: target, state, jobs
finished, failed, in flight and buffered, rates, ETA when the total is
known, and one row per slave.  Exit code 0 when a master answered, 3 when
none did within --timeout, 4 when it refused us (the secrets differ).

With --watch, ask again every SECONDS (default 2) and redraw the status in
place (on a terminal; elsewhere, one block after another) until the run
ends, then exit with its outcome: 0 the run completed with no failed job,
1 it ended otherwise (jobs failed for good, halted, an error in get_jobs),
3 no master answered, or it went away before its run was over (interrupted
or killed: run the master's command again to resume).
"""

NO_ANSWER = 3
REFUSED = 4
RUN_FAILED = 1
WATCH_SECONDS = 2.0


def build_parser(prog: str = "tm-status") -> common.Parser:
    parser = common.new_parser(prog, DESCRIPTION)
    common.add_address(parser)
    common.add_client_options(parser, json_help="print one JSON object, for scripts and monitoring")
    parser.add_argument(
        "--watch",
        type=common.positive_float,
        nargs="?",
        const=WATCH_SECONDS,
        default=None,
        metavar="SECONDS",
        help=f"ask every SECONDS (default: {WATCH_SECONDS:g}) until the run ends, then exit with its outcome",
    )
    parser.add_argument(
        "--log-format",
        type=common.log_format,
        default="text",
        metavar="FORMAT",
        help="text or json: how tm-status's own messages are written on stderr (default: text)",
    )
    return parser


class Refused(UsageError):
    """The master refused our handshake: the secrets differ (exit 4, as tm-ctl's)."""

    exit_code = REFUSED


def ask(address: str, timeout_ms: int, keys=None) -> dict | None:
    """The master's status snapshot, or None if it did not answer in time.

    Raises Refused when the master refused the handshake: that is no
    master missing, and waiting longer would not change it.
    """
    from taskmaster.wire import protocol, query

    try:
        return query.ask(address, protocol.status_request(), protocol.STATUS, timeout_ms, keys)
    except query.NoAnswer as exc:
        if exc.refused:
            raise Refused(str(exc)) from None
        return None


def main(argv: list[str] | None = None, prog: str = "tm-status") -> int:
    args = build_parser(prog).parse_intermixed_args(argv)

    def body() -> int:
        from taskmaster.master import status
        from taskmaster.wire import security

        common.setup_logging("info", "status", None, args.log_format)
        keys = security.keys_for(args.secret_file, args.insecure, args.address)
        if args.watch is not None:
            from taskmaster.cli.watch import watch

            return watch(prog, args.address, args.timeout, keys, args.watch, args.json)
        snapshot = ask(args.address, args.timeout, keys)
        if snapshot is None:
            common.say(prog, f"no master answered at {args.address} within {args.timeout} ms", error=False)
            return NO_ANSWER
        sys.stdout.write((json.dumps(snapshot) if args.json else status.render(snapshot)) + "\n")
        return 0

    common.run_command(prog, body)


if __name__ == "__main__":
    main()
