"""Child processes for tm-spawn and tm-run: start them, pass signals on, reap them.

Children get their own process group, so a Ctrl-C at the terminal reaches them
once, through us, rather than twice (a second SIGINT means "stop now"); and
they ask (PR_SET_PDEATHSIG) to receive SIGTERM if we die, so that even a
SIGKILL of the supervisor leaves no process behind for long.  Both without
``preexec_fn``, which runs Python in the forked child and is unsafe when the
caller has threads (``taskmaster.run`` may be called from any thread): the
process group is Popen's own, and each child makes its death request itself
at start-up (``taskmaster.launch.child``), told by the environment which
parent to watch.
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from typing import Protocol

log = logging.getLogger("taskmaster.supervisor")

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
PARENT_ENV = "TASKMASTER_SUPERVISOR_PID"  # tells a child which parent it must not outlive
WAIT_STEP_SECONDS = 0.5  # a wait for children looks at them at least this often
POLL_SECONDS = 0.005  # ... and this often where it cannot be told of their exit


def _load_prctl():
    """prctl from the C library, looked up once here rather than in every child (that runs ldconfig)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: the children still exit when the master tells them to


_prctl = _load_prctl()


def die_with_parent() -> None:
    """In a child started by a Supervisor: receive SIGTERM when that parent dies."""
    expected = os.environ.pop(PARENT_ENV, None)
    if expected is not None:
        die_with(int(expected))


def die_with(parent: int) -> None:
    """Receive SIGTERM when `parent` (our parent now) dies.

    The request only covers a parent alive when it is made: a parent already
    gone by then (we were adopted) means SIGTERM now.
    """
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def name_process(name: str, argv: list[str] | None = None) -> None:
    """Show this process as `name` in ps and top, and as ``name argv...`` in ``ps aux`` and ``pgrep -f``.

    The name (comm, 15 bytes at most) is what ``ps -e`` and top show; the
    command line is what ``ps aux`` shows, which would otherwise be the
    interpreter running tm-run or taskmaster.launch.child.
    """
    if argv is not None:
        import setproctitle  # a C extension: only the children that are named load it

        setproctitle.setproctitle(" ".join([name, *argv]))
    if _prctl is not None:
        _prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


def _own_process_group() -> dict:
    """Popen arguments for a child in a process group of its own, set up without Python in the child."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"start_new_session": True}  # a new session is a new process group too


def _sleep_until_one_exits(children: list[Child], seconds: float) -> None:
    """Sleep `seconds`, or less if one of `children` exits meanwhile.

    On Linux a pidfd becomes readable when its process exits: the wait ends
    then, not at the next look (see docs/performance.rst, "Waiting on
    children"), and a
    long wait costs no wake-ups on cores the jobs are using.  Elsewhere (or
    should a pidfd not be had), a look every few milliseconds.
    """
    fds: list[int] = []
    try:
        for child in children:
            fds.append(os.pidfd_open(child.pid))
        select.select(fds, [], [], seconds)
    except (AttributeError, OSError):  # no pidfd_open here, or the child was reaped meanwhile
        time.sleep(min(seconds, POLL_SECONDS))
    finally:
        for fd in fds:
            os.close(fd)


def exit_code(returncode: int) -> int:
    """A Popen return code as a shell would report it (signals as 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


class Child(Protocol):
    """What the Supervisor uses of a child: subprocess.Popen's, or taskmaster.launch.fork's."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def send_signal(self, signum: int) -> None: ...


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []
        self.signals: list[int] = []

    def start(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Run ``python -m module args...`` (`args` = ["-m", module, ...]) as a child (in `env`, default: ours)."""
        if args[:1] != ["-m"] or len(args) < 2:
            raise ValueError(f"a supervised child is a module run with -m, not {args[:2]}")
        env = {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}
        argv = [sys.executable, "-m", "taskmaster.launch.child", *args[1:]]
        child = subprocess.Popen(argv, env=env, **_own_process_group())
        self.children.append(child)
        return child

    def adopt(self, child: Child) -> Child:
        """Supervise a child started otherwise (forked by tm-run)."""
        self.children.append(child)
        return child

    def forward_signals(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._forward)

    def _forward(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        self.send(signum)

    def send(self, signum: int, children: list[Child] | None = None) -> None:
        for child in self.children if children is None else children:
            if child.poll() is None:
                try:
                    child.send_signal(signum)
                except ProcessLookupError:
                    pass

    def wait(self, children: list[Child], timeout: float | None = None) -> bool:
        """Wait until all of `children` exited; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while running := [child for child in children if child.poll() is None]:
            left = WAIT_STEP_SECONDS if deadline is None else min(WAIT_STEP_SECONDS, deadline - time.monotonic())
            if left <= 0:
                return False
            _sleep_until_one_exits(running, left)
        return True

    def stop(self, children: list[Child], timeout: float) -> None:
        """SIGTERM, then SIGKILL whatever is still running after `timeout`."""
        self.send(signal.SIGTERM, children)
        if not self.wait(children, timeout):
            self.send(signal.SIGKILL, children)
            self.wait(children, 5)
