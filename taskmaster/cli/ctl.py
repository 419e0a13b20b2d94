"""tm-ctl: change a running master's course - pause, resume, rate, stop."""

from __future__ import annotations

import json
import sys

from taskmaster.cli import common

DESCRIPTION = """\
Tell the master at --address what to do, and print its new state:

  pause      no job starts until resume: jobs handed out and not started
             yet are taken back; running jobs finish; slaves wait, connected
  resume     hand out jobs again
  rate N     start at most N jobs a second across all slaves
  rate off   no rate limit
  stop       the same as SIGTERM to the master: jobs in flight finish
             (within its --grace), it checkpoints and exits; again: at once

A restarted master runs with the settings on its command line (--rate),
not those set here.  Same access as the slaves: pass the run's
--secret-file.  A master reachable from other hosts without a secret
refuses control commands.

Exit codes: 0 the master did it, 2 bad input, 3 no master answered within
--timeout, 4 the master refused (secrets differ, or it has no secret on a
non-loopback address).
"""

NO_ANSWER = 3
REFUSED = 4


def build_parser(prog: str = "tm-ctl") -> common.Parser:
    parser = common.new_parser(prog, DESCRIPTION)
    common.add_address(parser)
    common.add_client_options(parser, json_help="print the answer as one JSON object, for scripts")
    parser.add_argument(
        "command",
        choices=("pause", "resume", "rate", "stop"),
        metavar="COMMAND",
        help="pause, resume, rate N|off, or stop",
    )
    parser.add_argument("value", nargs="?", metavar="N|off", help="for rate: jobs a second, or off")
    return parser


def parse(argv: list[str] | None, prog: str):
    """The arguments, and for rate the new limit (None: off); bad input exits 2 with one line."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    rate = None
    if args.command == "rate":
        if args.value is None:
            parser.error("rate needs a value: rate N (jobs a second) or rate off")
        if args.value != "off":
            try:
                rate = common.rate(args.value)
            except Exception as exc:  # argparse.ArgumentTypeError: say it as argparse would
                parser.error(f"rate: {exc}; use rate N (jobs a second, N > 0) or rate off")
    elif args.value is not None:
        parser.error(f"{args.command} takes no value (got {args.value!r})")
    return args, rate


def main(argv: list[str] | None = None, prog: str = "tm-ctl") -> int:
    args, rate = parse(argv, prog)

    def body() -> int:
        from taskmaster.master import control
        from taskmaster.wire import protocol, query, security

        keys = security.keys_for(args.secret_file, args.insecure, args.address)
        request = protocol.control_request(args.command, rate, args.timeout)
        try:
            answer = query.ask(args.address, request, protocol.CONTROL, args.timeout, keys)
        except query.NoAnswer as exc:
            sys.stderr.write(f"{prog}: error: {exc}\n")
            return REFUSED if exc.refused else NO_ANSWER
        if not answer.get("ok"):
            sys.stderr.write(f"{prog}: error: the master refused: {answer.get('error', 'no reason given')}\n")
            return REFUSED
        sys.stdout.write((json.dumps(answer) if args.json else control.describe(answer)) + "\n")
        return 0

    common.run_command(prog, body)


if __name__ == "__main__":
    main()
