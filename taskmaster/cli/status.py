"""tm-status: ask a running master how the run is going."""

from __future__ import annotations

import json
import sys

from taskmaster.cli import common

DESCRIPTION = """\
Ask the master at --address how its run is going: target, state, jobs
finished, failed, in flight and buffered, rates, ETA when the total is
known, and one row per slave.  Exit code 0 when a master answered, 3 when
none did within --timeout.
"""

NO_ANSWER = 3


def build_parser(prog: str = "tm-status") -> common.Parser:
    parser = common.new_parser(prog, DESCRIPTION)
    common.add_address(parser)
    parser.add_argument(
        "--secret-file",
        default=None,
        metavar="PATH",
        help="the run's secret file, if it has one (default: $TASKMASTER_SECRET_FILE)",
    )
    parser.add_argument(
        "--timeout",
        type=common.positive_int,
        default=2500,
        metavar="MS",
        help="how long to wait for an answer (default: 2500)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object, for scripts and monitoring")
    return parser


def ask(address: str, timeout_ms: int, keys=None) -> dict | None:
    """The master's status snapshot, or None if it did not answer in time."""
    from taskmaster import client, protocol

    try:
        return client.ask(address, protocol.status_request(), protocol.STATUS, timeout_ms, keys)
    except client.NoAnswer:
        return None


def main(argv: list[str] | None = None, prog: str = "tm-status") -> int:
    args = build_parser(prog).parse_intermixed_args(argv)

    def body() -> int:
        from taskmaster import security, status

        snapshot = ask(args.address, args.timeout, security.load_keys(args.secret_file))
        if snapshot is None:
            sys.stderr.write(f"{prog}: no master answered at {args.address} within {args.timeout} ms\n")
            return NO_ANSWER
        sys.stdout.write((json.dumps(snapshot) if args.json else status.render(snapshot)) + "\n")
        return 0

    common.run_command(prog, body)
    return 0  # not reached


if __name__ == "__main__":
    main()
