"""Command-line parsing shared by the four commands.

Options are declared once, in tables (``taskmaster.options``, shared with
``taskmaster.run``, as is reading them from TASKMASTER_<OPTION> variables),
so that ``tm-run`` and ``tm-spawn`` can accept the master's and the slaves'
options and pass each on to the process it belongs to.  Nothing here imports
gevent or zmq: the commands monkey-patch first, then import the rest.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from taskmaster import __version__
from taskmaster import options as _options
from taskmaster.errors import UsageError
from taskmaster.options import (  # noqa: F401 - the option tables, value types and their sources, for the commands
    COMMON_OPTIONS,
    DEFAULT_ADDRESS,
    ENV_PREFIX,
    FALSE_WORDS,
    LOG_FORMATS,
    MASTER_OPTIONS,
    MAX_RATE,
    NOT_FROM_ENVIRONMENT,
    SHARED_OPTIONS,
    SLAVE_OPTIONS,
    TRUE_WORDS,
    Option,
    add_address,
    add_options,
    address,
    child_environment,
    environment_values,
    environment_variable,
    failure_limit,
    metrics_address,
    non_negative_float,
    non_negative_int,
    option_variables,
    positive_float,
    positive_int,
    rate,
)
from taskmaster.options import option_settings as _settings
from taskmaster.options import value_from_text as _from_text
from taskmaster.patching import monkey_patch  # noqa: F401 - for the commands

LOG_LEVELS = ("debug", "info", "warning", "error")
log_format = _options.log_format  # the --log-format type (tm-status's too); a name setup_logging's parameter shadows
ENVIRONMENT_EPILOG = """\
Every option can also come from the environment as TASKMASTER_<OPTION>
(e.g. TASKMASTER_ADDRESS, TASKMASTER_SECRET_FILE, TASKMASTER_NO_PROGRESS=1);
the command line wins.
"""


def add_client_options(parser: argparse.ArgumentParser, json_help: str) -> None:
    """The options of the commands that ask a running master (tm-status, tm-ctl)."""
    parser.add_argument(
        "--secret-file",
        default=None,
        metavar="PATH",
        help="the run's secret file (default: this user's secret on this host, as the master's)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="ask a master started with --insecure: no secret, no encryption"
    )
    parser.add_argument(
        "--timeout",
        type=positive_int,
        default=2500,
        metavar="MS",
        help="how long to wait for an answer (default: 2500)",
    )
    parser.add_argument("--json", action="store_true", help=json_help)


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, exit code 2, and whose
    options also come from TASKMASTER_<OPTION> variables (the command line wins)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.from_environment: dict[str, tuple[str, Any]] = {}  # dest -> (variable, value)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _with_environment(self, namespace: argparse.Namespace | None) -> argparse.Namespace:
        # The variables' texts wait in the namespace as defaults: argparse
        # replaces those the command line sets, and only the others are
        # converted (and can be wrong) once parsing is done.
        namespace = argparse.Namespace() if namespace is None else namespace
        for name, action in _settings(self):
            text = os.environ.get(name, "")
            if text and not hasattr(namespace, action.dest):
                setattr(namespace, action.dest, _Unconverted(name, text, action))
        return namespace

    def _convert_environment(self, namespace: argparse.Namespace) -> None:
        for dest, value in vars(namespace).items():
            if isinstance(value, _Unconverted):
                try:
                    converted = _from_text(value.name, value.text, value.action)
                except UsageError as exc:
                    self.error(str(exc))
                setattr(namespace, dest, converted)
                self.from_environment[dest] = (value.name, converted)

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        namespace, extras = super().parse_known_args(args, self._with_environment(namespace))
        self._convert_environment(namespace)
        return namespace, extras

    def parse_known_intermixed_args(self, args=None, namespace=None):  # type: ignore[override]
        # Python 3.13 parses intermixed arguments without calling parse_known_args.
        namespace, extras = super().parse_known_intermixed_args(args, self._with_environment(namespace))
        self._convert_environment(namespace)
        return namespace, extras


@dataclass(frozen=True)
class _Unconverted:
    """A variable's text, standing in for an option's value until the command line is parsed."""

    name: str
    text: str
    action: argparse.Action


def new_parser(prog: str, description: str) -> Parser:
    parser = Parser(
        prog=prog,
        description=description,
        epilog=ENVIRONMENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def to_argv(args: argparse.Namespace, options: Sequence[Option]) -> list[str]:
    """The command-line flags that reproduce the non-default values of `options`."""
    argv: list[str] = []
    for opt in options:
        value = getattr(args, opt.dest)
        if value == opt.default:
            continue
        argv += [opt.flag] if opt.kind is None else [opt.flag, str(value)]
    return argv


def check_log_level(parser: argparse.ArgumentParser, level: str) -> None:
    if level.lower() not in LOG_LEVELS:
        source = getattr(parser, "from_environment", {}).get("log_level")
        what = f"{source[0]}=" if source and source[1] is level else "--log-level "
        parser.error(f"{what}{level!r} is not one of {', '.join(LOG_LEVELS)}")


_json_lines = False  # set by setup_logging: the command's own lines (say) are JSON objects too


def setup_logging(
    level: str, role: str, log_file: str | None = None, log_format: str = "text", process_id: str | None = None
) -> None:
    """Log lines carry a timestamp, the level and the process role (master, slave id).

    With `log_format` "json" each line is a JSON object instead (see
    taskmaster.logformat); `process_id` (a slave's id) is then a field of its own.
    """
    global _json_lines
    if log_format == "json":
        from taskmaster import progress
        from taskmaster.logformat import JsonFormatter

        progress.plain_lines_only()  # a drawn bar on stderr would not be JSON
        formatter: logging.Formatter = JsonFormatter(role, {role: process_id} if process_id else None)
    else:
        label = f"{role} {process_id}" if process_id else role
        formatter = logging.Formatter(f"%(asctime)s %(levelname)s {label}: %(message)s")
    _json_lines = log_format == "json"
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        try:
            handlers.append(logging.FileHandler(log_file))
        except OSError as exc:
            raise UsageError(f"cannot open log file {log_file}: {exc.strerror}; pass another --log-file") from None
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level.upper())


def say(prog: str, text: str, error: bool = False, logger: str = "taskmaster", **fields: Any) -> None:
    """One line of the command's own on stderr: ``prog: text`` (``prog: error: text``).

    With --log-format json it is a log record instead (on stderr and in the
    --log-file), with `fields` as fields of its own, so that every line is JSON;
    like the plain line, it is shown whatever --log-level says.
    """
    if _json_lines:
        level = logging.ERROR if error else logging.INFO
        record = logging.getLogger(logger).makeRecord(logger, level, __file__, 0, text, (), None, extra=fields)
        for handler in logging.getLogger().handlers:
            handler.handle(record)
    else:
        sys.stderr.write(f"{prog}: {'error: ' if error else ''}{text}\n")


def log_to_file(logger: str, message: str) -> None:
    """Log a line to the --log-file only: what was already printed to stderr."""
    record = logging.getLogger(logger).makeRecord(logger, logging.INFO, __file__, 0, message, (), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def run_command(prog: str, main: Callable[[], int]) -> NoReturn:
    """Run a command's body: UsageError becomes one line and exit code 2."""
    try:
        code = main()
    except UsageError as exc:
        say(prog, str(exc), error=True, exit_code=exc.exit_code)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.exit(code)
