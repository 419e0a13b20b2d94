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

from taskmaster import __version__, fileio
from taskmaster import options as _options
from taskmaster.errors import UsageError
from taskmaster.launch.patching import monkey_patch  # noqa: F401 - for the commands
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


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time: while a progress bar is drawn, its wrapper.

    progressbar2 replaces sys.stderr while it draws (taskmaster.progress) so
    that a line written there is put above the bar, not glued onto it; a
    handler holding the stream it was made with would bypass that.
    """

    def __init__(self, clear_line: bool = False) -> None:
        super().__init__(sys.stderr)
        # On a terminal that other processes draw on (tm-run: the master's bar,
        # its slaves' lines), a line first blanks the line it lands on, as
        # progressbar2 does (no escape sequence: NO_COLOR, plain terminals).
        # The bar is drawn again below it.
        self.clear_line = clear_line

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.clear_line:
            return text
        try:
            width = os.get_terminal_size(sys.stderr.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return text
        return "\r" + " " * (width - 1) + "\r" + text

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always sys.stderr


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
        from taskmaster.logformat import TextFormatter

        label = f"{role} {process_id}" if process_id else role
        formatter = TextFormatter(f"%(asctime)s %(levelname)s {label}: %(message)s")
    _json_lines = log_format == "json"
    from taskmaster import progress  # no I/O library: safe before the patching

    handlers: list[logging.Handler] = [_StderrHandler(log_format == "text" and progress.can_draw(sys.stderr))]
    if log_file:
        try:
            handlers.append(PrivateFileHandler(log_file))
        except PermissionError as exc:
            fix = "chmod go-w it" if "writable by group" in str(exc.strerror) else "remove it"
            reason = f"{exc.strerror}; {fix}, or pass another --log-file"
            raise UsageError(f"cannot open log file {log_file}: {reason}") from None
        except OSError as exc:
            raise UsageError(f"cannot open log file {log_file}: {exc.strerror}; pass another --log-file") from None
    for handler in handlers:
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(level.upper())


class PrivateFileHandler(logging.FileHandler):
    """The --log-file: created with mode 0600, appended to only when it is ours alone.

    Log lines can carry job data (a failed job's repr and message), so the
    file is as private as the failures file, and a link or a file someone
    else planted at its name is refused rather than written to.
    """

    def _open(self):  # type: ignore[override]
        fd = fileio.open_private_append(self.baseFilename)
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


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
