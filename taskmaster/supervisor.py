"""Child processes for tm-spawn and tm-run: start them, pass signals on, reap them.

Children get their own process group, so a Ctrl-C at the terminal reaches them
once, through us, rather than twice (a second SIGINT means "stop now"); and
they ask (PR_SET_PDEATHSIG) to receive SIGTERM if we die, so that even a
SIGKILL of the supervisor leaves no process behind for long.  Both without
``preexec_fn``, which runs Python in the forked child and is unsafe when the
caller has threads (``taskmaster.run`` may be called from any thread): the
process group is Popen's own, and each child makes its death request itself
at start-up (``taskmaster.supervised``), told by the environment which
parent to watch.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Protocol

log = logging.getLogger("taskmaster.supervisor")

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
PARENT_ENV = "TASKMASTER_SUPERVISOR_PID"  # tells a child which parent it must not outlive


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


def name_process(name: str) -> None:
    """Show this process as `name` in ps and top (its comm, 15 bytes at most); its command line stays."""
    if _prctl is not None:
        _prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]))


def _own_process_group() -> dict:
    """Popen arguments for a child in a process group of its own, set up without Python in the child."""
    if sys.version_info >= (3, 11):
        return {"process_group": 0}
    return {"start_new_session": True}  # a new session is a new process group too


def exit_code(returncode: int) -> int:
    """A Popen return code as a shell would report it (signals as 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


class Child(Protocol):
    """What the Supervisor uses of a child: subprocess.Popen's, or taskmaster.forked's."""

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
        argv = [sys.executable, "-m", "taskmaster.supervised", *args[1:]]
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
        while any(child.poll() is None for child in children):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, children: list[Child], timeout: float) -> None:
        """SIGTERM, then SIGKILL whatever is still running after `timeout`."""
        self.send(signal.SIGTERM, children)
        if not self.wait(children, timeout):
            self.send(signal.SIGKILL, children)
            self.wait(children, 5)
