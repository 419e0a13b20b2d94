"""Shared helpers: real processes, real sockets, real files - and a clean teardown.

Every process a test starts goes through the `procs` fixture, which starts it
in a new session and, at teardown, kills it together with every descendant
(tm-run and tm-spawn put their children in process groups of their own, so
killing one group is not enough).
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

PYTHON = sys.executable
REPO = Path(__file__).resolve().parent.parent

# Where PYTHONDONTWRITEBYTECODE is set (some shells and CI images set it),
# each pytest-xdist worker would rewrite the asserts of every test module
# anew, every run: about 2 CPU-seconds a worker, on two cores.  This process
# keeps its bytecode under .pytest_cache instead - never beside the sources,
# which is what the variable is usually set to prevent.  The processes the
# tests start are left as the environment says.
if sys.dont_write_bytecode:
    sys.pycache_prefix = str(REPO / ".pytest_cache" / "pycache")
    sys.dont_write_bytecode = False

# The code under test is this checkout, also after a non-editable install
# (``pip install '.[test]'`` puts a copy in site-packages): this process
# imports it first, and so does every process the tests start, whoever
# starts it, through PYTHONPATH.
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))
os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
if "taskmaster" in sys.modules and not Path(sys.modules["taskmaster"].__file__).resolve().is_relative_to(REPO):
    raise pytest.UsageError(
        f"taskmaster was imported from {sys.modules['taskmaster'].__file__} before the tests could import "
        f"the checkout at {REPO}: run python -m pytest from the checkout"
    )

# Every command of a user shares a default secret in $XDG_CONFIG_HOME/taskmaster
# (taskmaster.secretfile): the tests' processes use one of their own, never the
# real one of whoever runs them, and leave nothing behind.
TEST_CONFIG_HOME = tempfile.mkdtemp(prefix="taskmaster-tests-config-")
os.environ["XDG_CONFIG_HOME"] = TEST_CONFIG_HOME
atexit.register(shutil.rmtree, TEST_CONFIG_HOME, True)


def tm(command: str, *args: str) -> list[str]:
    """argv for one of the commands: tm("master", "mod") -> python -m taskmaster master mod."""
    return [PYTHON, "-m", "taskmaster", command, *map(str, args)]


# Each pytest-xdist worker takes its ports from a range of its own, below the
# kernel's ephemeral ports, and in turn: a port one test let go (a master it
# killed, to restart) is never another test's, so no slave ever reaches the
# master of a test running beside it.
PORTS_PER_WORKER = 800
_worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
_port_base = 20000 + PORTS_PER_WORKER * (int(_worker[2:]) if _worker[2:].isdigit() else 0) % 12000
_port_turn = itertools.count()


def free_port() -> int:
    for _ in range(PORTS_PER_WORKER):
        port = _port_base + next(_port_turn) % PORTS_PER_WORKER
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # in use (by another program): the next one
            return port
    raise RuntimeError(f"no free port in {_port_base}..{_port_base + PORTS_PER_WORKER - 1}")


def tcp_address() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll `predicate` until it is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid`, found through /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Procs:
    """Starts processes for one test and guarantees they are gone after it."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.started: list[subprocess.Popen] = []

    def start(
        self,
        argv: list[str],
        *,
        cwd: Path | None = None,
        env: dict | None = None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn: Callable[[], None] | None = None,
    ) -> subprocess.Popen:
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT dumps every thread's stack: see wait_exit
        if env:
            full_env.update(env)
        proc = subprocess.Popen(
            argv,
            cwd=cwd or self.cwd,
            env=full_env,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
            preexec_fn=preexec_fn,  # e.g. a lower limit on open files
        )
        self.started.append(proc)
        return proc

    def run(self, argv: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        """Start, wait for the exit (killing it past `timeout`), return code and output."""
        proc = self.start(argv, **kwargs)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(proc)
            out, err = proc.communicate()
            raise AssertionError(f"{argv} did not finish in {timeout}s; stderr:\n{err[-3000:]}") from None
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to proc and all its descendants."""
        for pid in [proc.pid, *descendants(proc.pid)]:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def cleanup(self) -> None:
        for proc in self.started:
            self.kill(proc)
        for proc in self.started:
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, lay the tests out so that the workers end together.

    Its worksteal scheduler hands each worker a contiguous share of this
    list, then moves tests from the longest queue to workers that ran dry.
    So the long tests (``slow``) are dealt to the front of every share, not
    left to end one worker's run alone, and the ``alone`` tests go last: one
    met in the middle would stop every other worker until the tests beside
    it ended and it ran (see ``machine_share``).  Every worker computes the
    same order, as xdist requires.
    """
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    if workers <= 1:
        return
    alone = [item for item in items if item.get_closest_marker("alone")]
    rest = [item for item in items if not item.get_closest_marker("alone")]
    slow = [item for item in rest if item.get_closest_marker("slow")]
    quick = iter([item for item in rest if not item.get_closest_marker("slow")])
    shares: list[list] = [slow[w::workers] for w in range(workers)]
    remaining = len(items)
    for w, share in enumerate(shares):  # the sizes xdist cuts the list into
        size = remaining // (workers - w)
        remaining -= size
        share.extend(itertools.islice(quick, max(0, size - len(share))))
    shares[-1].extend(quick)  # none left unless the slow ones overfilled a share
    items[:] = [item for share in shares for item in share] + alone


@pytest.fixture(autouse=True)
def machine_share(request, tmp_path_factory):
    """Tests marked ``alone`` run with no other test beside them, also in pytest-xdist's workers.

    They measure how well a run keeps its slaves busy, which a neighbour
    test taking the cores would spoil.  A readers-writer lock on files the
    workers share: every other test holds the machine shared; an ``alone``
    test closes the turnstile (no new test starts), waits for the running
    ones to end, and holds the machine alone.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    shared_dir = tmp_path_factory.getbasetemp().parent  # the same for every worker of this run
    alone = request.node.get_closest_marker("alone") is not None
    with open(shared_dir / "turnstile.lock", "a") as turnstile, open(shared_dir / "machine.lock", "a") as machine:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(machine, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if not alone:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(machine, fcntl.LOCK_UN)
            fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.fixture
def procs(tmp_path: Path):
    p = Procs(tmp_path)
    yield p
    p.cleanup()


# A job module that records every job it handles: one line per job, appended
# with a single write so lines from concurrent slaves never interleave.
RECORDING_MODULE = """
import os, time

RECORD = os.environ["TM_RECORD"]

def get_jobs(last=0, n="1000", **kwargs):
    for i in range(int(last), int(n)):
        yield i

def handle_job(i):
    delay = float(os.environ.get("TM_DELAY", "0"))
    if delay:
        time.sleep(delay)
    gate = os.environ.get("TM_GATE")  # jobs from TM_GATE_AT on wait until this file exists
    if gate and i >= int(os.environ["TM_GATE_AT"]):
        while not os.path.exists(gate):
            time.sleep(0.02)
    fail = os.environ.get("TM_FAIL_EVERY")
    if fail and i % int(fail) == 0:
        raise ValueError(f"job {i} fails on purpose")
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, f"{i}\\n".encode())
    finally:
        os.close(fd)
"""


def write_module(directory: Path, name: str, source: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    return path


@pytest.fixture
def recording(tmp_path: Path):
    """(module path, record file, env) for the recording job module."""
    module = write_module(tmp_path, "recjobs", RECORDING_MODULE)
    record = tmp_path / "handled.txt"
    return module, record, {"TM_RECORD": str(record)}


def handled(record: Path) -> list[int]:
    if not record.exists():
        return []
    return [int(line) for line in record.read_text().split()]


# ---------------------------------------------------------------------------
# Helpers for the end-to-end suite (test_commands, test_bad_input,
# test_checkpoint).  Nothing above this line is changed by them.

SCRIPTS = ("tm-master", "tm-slave", "tm-spawn", "tm-run")
EXAMPLE = REPO / "taskmaster" / "example.py"


def script(name: str) -> str:
    """Path of a console script installed beside the interpreter running the tests."""
    return str(Path(PYTHON).parent / name)


def error_line(result: subprocess.CompletedProcess, prog: str, *fragments: str) -> str:
    """Check a bad-input failure: exit 2, one stderr line, no traceback; return the line."""
    err = result.stderr
    assert "Traceback" not in err, f"traceback on stderr:\n{err}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert result.returncode == 2, f"exit code {result.returncode}, stderr: {err}"
    line = lines[0]
    assert line.startswith(f"{prog}: error: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def snapshot(directory: Path) -> dict[str, bytes | None]:
    """Every file under `directory` (relative path -> bytes; None for a directory)."""
    out: dict[str, bytes | None] = {}
    for path in sorted(directory.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        out[str(path.relative_to(directory))] = None if path.is_dir() else path.read_bytes()
    return out


def state_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.state"))


def pid_gone(pid: int) -> bool:
    """True when `pid` no longer exists (or is a zombie nobody reaps yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def duplicates(jobs: list[int]) -> int:
    """How many handlings were repeats of a job already handled."""
    return len(jobs) - len(set(jobs))


class ProgressWatch:
    """Polls a record file and remembers (time, count) so a rate can be measured."""

    def __init__(self, record: Path) -> None:
        self.record = record
        self.samples: list[tuple[float, int]] = []

    def count(self) -> int:
        n = len(handled(self.record))
        self.samples.append((time.monotonic(), n))
        return n

    def handled_in_last(self, seconds: float) -> int:
        """Jobs handled within the last `seconds` of sampling (the whole history if shorter)."""
        now, latest = self.samples[-1]
        earlier = [n for t, n in self.samples if t <= now - seconds]
        return latest - (earlier[-1] if earlier else 0)

    def span(self) -> float:
        return self.samples[-1][0] - self.samples[0][0] if self.samples else 0.0


# ---------------------------------------------------------------------------
# Network namespaces for the multi-host tests (tests/netns.py): the `network`
# fixture, hosts A, B and C on a private bridge (skipped where impossible).

from netns import network  # noqa: E402,F401

# Processes whose output goes to a log file instead of a pipe (a pipe nobody
# reads can fill up and stall a long-running master or slave).


def start_logged(procs, argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a process with stdout and stderr going to `log`."""
    with open(log, "w") as f:
        return procs.start(argv, env=env, stdout=f, stderr=f)


def text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


def tail(log: Path, chars: int = 3000) -> str:
    return text(log)[-chars:] or "(empty log)"


def wait_exit(proc: subprocess.Popen, timeout: float, log: Path) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        # Where is it stuck?  Python's faulthandler writes the stacks to its log.
        proc.send_signal(signal.SIGABRT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        raise AssertionError(f"{proc.args} still running after {timeout}s; its log:\n{tail(log, 6000)}") from None


def wait_listening(proc: subprocess.Popen, log: Path, timeout: float = 30) -> str:
    """Wait for the master's "listening on ADDR" line; the address."""

    def listening():
        match = re.search(r"listening on (\S+)", text(log))
        if match is None and proc.poll() is not None:
            raise AssertionError(f"the master exited ({proc.returncode}) before listening:\n{tail(log)}")
        return match and match.group(1)

    return wait_for(listening, timeout, what=f"'listening on' in {log.name}")

