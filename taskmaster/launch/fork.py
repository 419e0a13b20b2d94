"""tm-run's children, forked from it with the imports already done.

A fresh interpreter for the master and for each slave costs CPU time (the
interpreter, then zmq, gevent and our modules), and tm-run starts them all
at once: on two cores that was most of a small run (see
docs/performance.rst, "Forking tm-run's children").  So tm-run imports those
modules once and forks its master and slaves from itself, which costs
milliseconds.

Only tm-run does this.  Its process is its own and has one thread, so
nothing is held by another thread at the fork.  ``taskmaster.run`` may be
called from any thread of any program; it starts fresh interpreters
(``taskmaster.supervisor``).

The monkey patching is done once too, before the imports, as each child
would have done it first thing (unless told not to): in each child it cost
more again, most of it walking the heap for locks to replace.

What is imported before the fork is ours and our dependencies', never the
user's module: a connection or a thread made when that module is imported
would be shared by every child.  The children import it themselves, as
fresh processes would - but only once tm-run has checked the targets (the
gate), so that a bad one is one message rather than one per process.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, NoReturn

from taskmaster.launch import patching
from taskmaster.launch.supervisor import Supervisor, die_with, name_process

# What every child needs, imported before the fork (after the patching, as
# gevent wants).
PRELOAD = (
    "zmq",
    "zmq.green",
    "gevent",
    "gevent.monkey",
    "taskmaster.master.process",  # and the core beneath it
    "taskmaster.slave.core",
    "taskmaster.wire.security",
    "taskmaster.master.checkpoint",
    "taskmaster.master.failures_file",
    "pprint",  # gevent's hub imports it when it is made, in each child otherwise
    "setproctitle",  # each child sets its command line with it
)
_fork, _waitpid = os.fork, os.waitpid
Command = Callable[[list[str], str], object]  # a command's main(argv, prog)


class Commands(NamedTuple):
    """The mains the children run (given by the CLI, which the library does not import)."""

    master: Command
    slave: Command


def preload(monkey_patch: bool) -> None:
    """Make this process what each child would make of itself first: patched (or not), with the imports done."""
    patching.monkey_patch(not monkey_patch)
    for name in PRELOAD:
        importlib.import_module(name)
    global _fork, _waitpid
    from gevent import monkey

    # Ours, not gevent's: its fork and waitpid would need its loop running here.
    _fork, _waitpid = monkey.get_original("os", ["fork", "waitpid"])


class Gate:
    """Holds forked children until the parent has checked the targets.

    One pipe: the parent writes a byte per child to let them go, or closes it
    unwritten to send them away quietly (it reports the bad target itself).
    A parent that dies closes it too.
    """

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.children = 0

    def open(self) -> None:
        os.write(self.write_end, b"g" * self.children)
        self.close()

    def close(self) -> None:
        """Close our ends, once: a second close could hit a file that reuses the number meanwhile."""
        for fd in (self.read_end, self.write_end):
            if fd >= 0:
                os.close(fd)
        self.read_end = self.write_end = -1

    def wait(self) -> bool:
        """In a child: True once the parent lets us go, False if it sends us away."""
        os.close(self.write_end)  # or our own copy would keep the pipe open
        opened = os.read(self.read_end, 1) == b"g"
        os.close(self.read_end)
        return opened


class ForkedChild:
    """A forked child, with what the Supervisor uses of subprocess.Popen's interface."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = _waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = 255  # reaped by someone else: its status is lost
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)  # -N for signal N, as Popen
        return self.returncode

    def send_signal(self, signum: int) -> None:
        os.kill(self.pid, signum)


def fork_children(
    supervisor: Supervisor,
    children: Sequence[tuple[Command, list[str], str]],
    env: Mapping[str, str],
    check_targets: Callable[[], None],
) -> list[ForkedChild]:
    """Fork a child per ``(command, argv, prog)``, supervised; let them go once `check_targets` passed.

    The targets are checked here while the children start.  Should the check
    raise (a bad target), the gate closes unopened: the children leave
    without a word, exit 2, and the exception is the one message.
    """
    gate = Gate()
    try:
        started = [supervisor.adopt(fork(command, argv, prog, env, gate)) for command, argv, prog in children]
        check_targets()
        gate.open()
        return started
    finally:
        gate.close()


def fork(
    command: Command,
    argv: list[str],
    prog: str,
    env: Mapping[str, str],
    gate: Gate,
) -> ForkedChild:
    """Fork a child that runs ``command(argv, prog)`` (a command's main) once `gate` opens (after preload)."""
    parent = os.getpid()
    sys.stdout.flush()  # or what is buffered would be written by the child too
    sys.stderr.flush()
    gate.children += 1
    pid = _fork()
    if pid:
        return ForkedChild(pid)
    _run_child(command, argv, prog, env, gate, parent)


def _run_child(
    command: Command,
    argv: list[str],
    prog: str,
    env: Mapping[str, str],
    gate: Gate,
    parent: int,
) -> NoReturn:
    """The whole life of a forked child: it never returns into the parent's code."""
    code = 1
    try:
        os.setpgid(0, 0)  # a group of our own, as the supervisor's other children have
        die_with(parent)
        name_process(prog, argv)  # ps shows tm-master and tm-slave, not tm-run three times
        # The parent's handlers forward signals to its children: ours are the command's own.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ.clear()
        os.environ.update(env)
        sys.argv = [prog, *argv]
        if not gate.wait():
            code = 2  # a bad target, which the parent reports
        else:
            code = _exit_code(command, argv, prog)
    except KeyboardInterrupt:
        code = 130  # a SIGINT passed on by the parent before the command took over its signals
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the parent
        logging.getLogger("taskmaster").exception("%s failed", prog)
    finally:
        end_process(code)


def _exit_code(command: Command, argv: list[str], prog: str) -> int:
    try:
        command(argv, prog)
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        sys.stderr.write(f"{exc.code}\n")
        return 1
    return 0


def end_process(code: int) -> NoReturn:
    """End this process as an interpreter would, but without taking its modules apart.

    The atexit functions run (the user's, logging's flush) and the standard
    streams are flushed; the teardown of gevent's and zmq's modules (tens of
    milliseconds, see docs/performance.rst, "Forking tm-run's children") is
    skipped.  For a forked child (which must never return into its
    parent's code) and for tm-run once its children are reaped.
    """
    import atexit

    try:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
    finally:
        os._exit(code)
