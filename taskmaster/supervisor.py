"""Child processes for tm-spawn and tm-run: start them, pass signals on, reap them.

Children get their own process group, so a Ctrl-C at the terminal reaches them
once, through us, rather than twice (a second SIGINT means "stop now"); and
they are asked (PR_SET_PDEATHSIG) to receive SIGTERM if we die, so that even
a SIGKILL of the supervisor leaves no process behind for long.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger("taskmaster.supervisor")

_PR_SET_PDEATHSIG = 1


def _load_prctl():
    """prctl from the C library, looked up once here rather than in every child (that runs ldconfig)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None  # not Linux: the children still exit when the master tells them to


_prctl = _load_prctl()


def _in_child() -> None:
    """Runs in the child between fork and exec: own process group, die with us."""
    os.setpgid(0, 0)
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def exit_code(returncode: int) -> int:
    """A Popen return code as a shell would report it (signals as 128+N)."""
    return 128 - returncode if returncode < 0 else returncode


class Supervisor:
    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []
        self.signals: list[int] = []

    def start(self, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
        """Run ``python args...`` as a child (in `env`, default: ours)."""
        child = subprocess.Popen([sys.executable, *args], preexec_fn=_in_child, env=env)
        self.children.append(child)
        return child

    def forward_signals(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._forward)

    def _forward(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        self.send(signum)

    def send(self, signum: int, children: list[subprocess.Popen] | None = None) -> None:
        for child in self.children if children is None else children:
            if child.poll() is None:
                try:
                    child.send_signal(signum)
                except ProcessLookupError:
                    pass

    def wait(self, children: list[subprocess.Popen], timeout: float | None = None) -> bool:
        """Wait until all of `children` exited; False if `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while any(child.poll() is None for child in children):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def stop(self, children: list[subprocess.Popen], timeout: float) -> None:
        """SIGTERM, then SIGKILL whatever is still running after `timeout`."""
        self.send(signal.SIGTERM, children)
        if not self.wait(children, timeout):
            self.send(signal.SIGKILL, children)
            self.wait(children, 5)
