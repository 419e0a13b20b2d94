"""The options of the master and the slaves, declared once, in tables; and where their values come from.

``tm-run``, ``tm-spawn`` and ``taskmaster.run`` accept the master's and the
slaves' options and pass each on to the process it belongs to, as flags
(``flags``); the commands build their parsers from the same tables; every
option can also come from a TASKMASTER_<OPTION> variable.  Kept in the
library, not in ``taskmaster.cli``, so that ``taskmaster.run`` uses them
without importing the command line.  Nothing here imports gevent or zmq.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from taskmaster.config import DEFAULT_ADDRESS, MasterConfig, SlaveConfig
from taskmaster.errors import UsageError

# The defaults are the config classes' (taskmaster.config), never written here.
MASTER = MasterConfig()
SLAVE = SlaveConfig()
ENV_PREFIX = "TASKMASTER_"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
# Options that make no sense as a setting of the environment: they are actions, not settings.
NOT_FROM_ENVIRONMENT = frozenset({"help", "version", "new_secret", "beside_master"})


def _whole_number(minimum: int, description: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not {description}")
        return value

    return parse


positive_int = _whole_number(1, "a positive integer")
non_negative_int = _whole_number(0, "a whole number >= 0")


def _number(positive: bool, description: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (0 < value if positive else 0 <= value) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} is not {description}")
        return value

    return parse


positive_float = _number(True, "a positive number")
non_negative_float = _number(False, "a number >= 0")


MAX_RATE = 1e12  # as protocol.MAX_RATE (not imported here: this module imports no zmq)


def rate(text: str) -> float:
    """--rate and tm-ctl rate: jobs per second, a positive number."""
    value = positive_float(text)
    if value > MAX_RATE:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_RATE:g} jobs a second")
    return value


def failure_limit(text: str) -> Any:
    """--max-failures: N jobs, or P% of the jobs resolved."""
    from taskmaster.failure_limit import parse

    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_TCP = re.compile(r"^tcp://(\*|[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):(\d{1,5})$")


def address(text: str) -> str:
    """A ZeroMQ endpoint we can bind or connect: tcp://HOST:PORT or ipc://PATH."""
    match = _TCP.match(text)
    if match and 1 <= int(match.group(2)) <= 65535:
        return text
    if text.startswith("ipc://") and len(text) > len("ipc://"):
        return text
    raise argparse.ArgumentTypeError(
        f"{text!r} is not an address: use tcp://HOST:PORT (e.g. tcp://127.0.0.1:3050) or ipc:///path/to/socket"
    )


LOG_FORMATS = ("text", "json")


def log_format(text: str) -> str:
    if text not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log format: use text or json")
    return text


# /metrics listens here when the address names no host: loopback, safe by default.
DEFAULT_HOST = "127.0.0.1"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` -> (host, port); the host defaults to loopback.

    ``*`` as the host means every interface; an IPv6 host goes in brackets.
    Raises ValueError with the reason.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("an IPv6 host goes in brackets, e.g. [::1]:9090")
    if host == "*":
        host = "0.0.0.0"
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"the port must be a number from 1 to 65535, not {port_text!r}")
    if any(c.isspace() or c in "/@" for c in host):
        raise ValueError(f"{host!r} is not a host name or address")
    return host or DEFAULT_HOST, int(port_text)


def metrics_address(text: str) -> str:
    """Where to serve /metrics: HOST:PORT, :PORT or PORT (loopback)."""
    try:
        parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a metrics address ({exc}): use HOST:PORT, e.g. 127.0.0.1:9090, or a port alone"
        ) from None
    return text


class Option(NamedTuple):
    flag: str
    kind: Callable[[str], Any] | None  # None: a switch
    default: Any
    help: str
    metavar: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


COMMON_OPTIONS = [
    Option("--log-level", str, "info", "log verbosity: debug, info, warning or error (default: info)", "LEVEL"),
    Option("--log-file", str, None, "also append log lines to this file", "PATH"),
    Option("--no-progress", None, not MASTER.progress, "no progress bar or periodic progress lines"),
    Option("--no-monkey-patch", None, False, "do not apply gevent's monkey patching before loading the module"),
    Option(
        "--log-format",
        log_format,
        "text",
        "text: one line per event; json: one JSON object per line (time, level, role, message and the "
        "event's fields), for log collectors (default: text)",
        "FORMAT",
    ),
]

MASTER_OPTIONS = [
    Option(
        "--size",
        positive_int,
        MASTER.size,
        "most jobs held at once, buffered or in flight: a hard bound (default: the master chooses, "
        "10000 jobs or up to 16 times that while jobs pickle to 64 bytes or less)",
        "N",
    ),
    Option("--state-file", str, None, "checkpoint file (default: derived from the target and arguments, in .)", "PATH"),
    Option(
        "--failures-file", str, None, "where jobs failed for good are recorded (default: beside the state file)", "PATH"
    ),
    Option("--reset", None, MASTER.reset, "discard the saved state and start from the beginning"),
    Option("--retry-failed", None, MASTER.retry_failed, "run exactly the jobs in the failures file again"),
    Option(
        "--total",
        positive_int,
        MASTER.total,
        "how many jobs there are, for percent done and ETA (default: the module's count_jobs(**kwargs), if it has one)",
        "N",
    ),
    Option("--result-file", str, None, "write the run's outcome as JSON to this file, for scripts", "PATH"),
    Option(
        "--checkpoint-every",
        positive_float,
        MASTER.checkpoint_interval,
        "seconds between two writes of the state file while jobs finish (default: %(default)s)",
        "SECONDS",
    ),
    Option(
        "--linger",
        non_negative_float,
        MASTER.linger,
        "stay reachable at least this long after starting, so slaves "
        "started with the master are told to quit even when the run ends first (default: %(default)s)",
        "SECONDS",
    ),
    Option(
        "--lease-timeout",
        positive_float,
        MASTER.lease_timeout,
        "seconds a slave may stay silent before its jobs go to others (default: %(default)s)",
        "SECONDS",
    ),
    Option(
        "--max-retries",
        non_negative_int,
        MASTER.max_retries,
        "retries of a job whose handler raised (default: %(default)s)",
        "N",
    ),
    Option(
        "--metrics-address",
        metrics_address,
        MASTER.metrics_address,
        "serve Prometheus metrics at http://HOST:PORT/metrics; PORT alone or :PORT means 127.0.0.1:PORT, "
        "* as HOST every interface (default: no metrics)",
        "HOST:PORT",
    ),
    Option(
        "--rate",
        rate,
        MASTER.rate,
        "start at most N jobs a second across all slaves; tm-ctl rate changes it live (default: no limit)",
        "N",
    ),
    Option(
        "--max-failures",
        failure_limit,
        MASTER.max_failures,
        "LIMIT is N or P%%: halt the run once more than N jobs failed for good in this run, or more than "
        "P%% of the jobs resolved in it (judged from 1,000 resolved on) (default: never)",
        "LIMIT",
    ),
]

SLAVE_OPTIONS = [
    Option(
        "--concurrency",
        positive_int,
        SLAVE.concurrency,
        "greenlets running jobs at once in each slave (default: %(default)s)",
        "N",
    ),
    Option(
        "--timeout",
        positive_int,
        SLAVE.timeout_ms,
        "milliseconds to wait for the master's answer (default: %(default)s)",
        "MS",
    ),
    Option(
        "--retries", positive_int, SLAVE.retries, "tries before giving up on the master (default: %(default)s)", "N"
    ),
    Option(
        "--job-timeout",
        positive_float,
        SLAVE.job_timeout,
        "fail a job that runs longer than this (default: no limit)",
        "SECONDS",
    ),
    Option(
        "--wait-for-master",
        non_negative_float,
        SLAVE.wait_for_master,
        "keep trying to reach the master this long, at the start and whenever it goes away, "
        "before giving up; 0: for ever (default: --timeout x --retries)",
        "SECONDS",
    ),
]

# Options that the master and the slaves both take, under the same name.
SHARED_OPTIONS = [
    Option(
        "--secret-file",
        str,
        None,
        "shared secret: encrypt and authenticate all traffic with CURVE; needed by runs across hosts "
        "(default: this user's secret on this host, ~/.config/taskmaster/secret, made on first use)",
        "PATH",
    ),
    Option(
        "--insecure",
        None,
        False,
        "no secret: no authentication, no encryption (any local user can take jobs and control the run)",
    ),
    Option(
        "--grace",
        positive_float,
        MASTER.grace,
        "on SIGINT/SIGTERM, seconds to wait for the jobs in flight before stopping (default: %(default)s)",
        "SECONDS",
    ),
    Option(
        "--no-job-repr",
        None,
        not MASTER.job_repr,
        "name a job in logs by its position only, never by its repr, which may hold data or credentials "
        "(a DSN in a job's arguments)",
    ),
]


def environment_variable(flag: str) -> str:
    """The variable that sets an option: --secret-file -> TASKMASTER_SECRET_FILE."""
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def option_settings(parser: argparse.ArgumentParser) -> Iterable[tuple[str, argparse.Action]]:
    """(variable, action) for every option of `parser` that the environment may set."""
    for action in parser._actions:
        flags = [flag for flag in action.option_strings if flag.startswith("--")]
        if flags and action.dest not in NOT_FROM_ENVIRONMENT and action.nargs != argparse.SUPPRESS:
            yield environment_variable(flags[0]), action


def option_variables(parser: argparse.ArgumentParser) -> set[str]:
    """The names of the variables that set `parser`'s options."""
    return {name for name, _ in option_settings(parser)}


def value_from_text(name: str, text: str, action: argparse.Action) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        word = text.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return word in TRUE_WORDS
        raise UsageError(f"{name}={text!r} is not a switch: use 1, true, yes or 0, false, no")
    convert = action.type or str
    try:
        return convert(text)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        reason = str(exc)
        # The converters say "'x' is not ...": name the variable in front of the value.
        if reason.startswith(repr(text)):
            raise UsageError(f"{name}={reason}") from None
        raise UsageError(f"{name}={text!r}: {reason}") from None


def environment_values(parser: argparse.ArgumentParser, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Option values set by TASKMASTER_<OPTION> variables, by destination.

    Why: on a cluster engine (Kubernetes, Compose, Slurm) settings come from
    the environment far more easily than from a command line.  An empty
    variable counts as unset, so ``TASKMASTER_SECRET_FILE=`` turns a secret
    off.  Raises UsageError naming the variable for a value that does not fit.
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for name, action in option_settings(parser):
        text = environ.get(name, "")
        if text:
            values[action.dest] = value_from_text(name, text, action)
    return values


def child_environment(parser: argparse.ArgumentParser) -> dict[str, str]:
    """This process's environment without the variables that set `parser`'s options.

    tm-run and tm-spawn resolve every setting themselves and pass each one to
    their children as a flag; a child that also read the variables would take
    a value the parent's command line had overridden back to its default.
    """
    drop = option_variables(parser)
    return {key: value for key, value in os.environ.items() if key not in drop}


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option], title: str | None = None) -> None:
    group = parser.add_argument_group(title) if title else parser
    for opt in options:
        if opt.kind is None:
            group.add_argument(opt.flag, action="store_true", default=opt.default, help=opt.help)
        else:
            group.add_argument(opt.flag, type=opt.kind, default=opt.default, help=opt.help, metavar=opt.metavar)


def add_address(parser: argparse.ArgumentParser, default: str | None = DEFAULT_ADDRESS) -> None:
    parser.add_argument(
        "--address",
        type=address,
        default=default,
        help=f"ZeroMQ endpoint of the master (default: {default or 'a private ipc:// socket'})",
        metavar="ADDR",
    )


def flags(values: Mapping[str, Any], options: Sequence[Option]) -> list[str]:
    """The command-line flags that set the non-default values in `values` (by dest) of `options`."""
    argv: list[str] = []
    for opt in options:
        value = values.get(opt.dest, opt.default)
        if value is None or value == opt.default or value is False:
            continue
        argv += [opt.flag] if opt.kind is None else [opt.flag, str(value)]
    return argv
