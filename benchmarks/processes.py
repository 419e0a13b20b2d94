"""The benchmark's child processes: run one bounded, measured, and leave nothing behind.

Every run is a session of its own; its wall time comes from a pidfd (no
polling delay), its peak RSS from the kernel's VmHWM, polled by a thread that
can also stop a run above a memory cap.  SIGINT and SIGTERM are deferred while
a child is being started, so that every child is registered before it can be
orphaned.  Only the standard library.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_live: dict[int, subprocess.Popen] = {}  # session id (= leader pid) -> leader
_critical = 0
_pending_signal: int | None = None


def on_signal(signum: int, frame: object) -> None:
    global _pending_signal
    if _critical:
        _pending_signal = signum  # raised as soon as the child is registered
        return
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _no_interrupt():
    """Defer SIGINT/SIGTERM, so a child is never started without being registered."""
    global _critical, _pending_signal
    _critical += 1
    try:
        yield
    finally:
        _critical -= 1
        if not _critical and _pending_signal is not None:
            signum, _pending_signal = _pending_signal, None
            raise KeyboardInterrupt(f"signal {signum}")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()  # [state, ppid, pgrp, session, ...]


def session_members(sid: int) -> list[int]:
    """Every live process in session `sid` (each child we start leads its own)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields and int(fields[3]) == sid and fields[0] != "Z":
                out.append(int(entry))
    return out


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def kill_session(sid: int, grace: float = 0.0) -> list[int]:
    """SIGTERM (if grace) then SIGKILL every process of the session; the pids found."""
    found = session_members(sid)
    if grace and found:
        for pid in found:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and session_members(sid):
            time.sleep(0.05)
    for _ in range(3):  # a member may fork while we kill
        members = session_members(sid)
        if not members:
            break
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return found


def kill_everything() -> None:
    for sid, proc in list(_live.items()):
        kill_session(sid, grace=2.0)
        with contextlib.suppress(Exception):
            proc.wait(timeout=5)
        _live.pop(sid, None)


def vm_hwm_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class RssWatch(threading.Thread):
    """Polls the peak RSS (VmHWM) of one process of a run; kills the run above a cap.

    The process is the leader itself, or (match) its child whose command line
    or name contains `match` (alternatives separated by |) - the master that
    tm-run starts (older trees) or forks and names tm-master.
    """

    def __init__(self, leader: int, match: str | None, cap_kb: int | None, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.leader, self.match, self.cap_kb, self.interval = leader, match, cap_kb, interval
        self.pid: int | None = None if match else leader
        self.peak_kb = 0
        self.capped = False
        self.done = threading.Event()

    def _find(self) -> int | None:
        for pid in children(self.leader):
            for name in ("cmdline", "comm"):  # a started child's command line; a forked one's name
                try:
                    with open(f"/proc/{pid}/{name}", "rb") as f:
                        seen = f.read()
                    if self.match and any(m.encode() in seen for m in self.match.split("|")):
                        return pid
                except OSError:
                    pass
        return None

    def run(self) -> None:
        while not self.done.is_set():
            self.sample()
            if self.capped:
                kill_session(self.leader)
                return
            self.done.wait(self.interval)

    def sample(self) -> None:
        if self.pid is None:
            self.pid = self._find()
        if self.pid is not None:
            hwm = vm_hwm_kb(self.pid)
            if hwm:
                self.peak_kb = max(self.peak_kb, hwm)
                if self.cap_kb and hwm > self.cap_kb:
                    self.capped = True

    def stop(self) -> None:
        self.done.set()
        self.join(timeout=5)


@dataclass
class Exec:
    returncode: int | None
    seconds: float
    cpu_seconds: float
    stdout: str
    stderr: str
    peak_kb: int
    timed_out: bool = False
    capped: bool = False
    leftovers: int = 0  # processes of the run still alive after its leader exited


def execute(argv: list[str], *, cwd: Path, timeout: float, env: dict[str, str] | None = None,
            watch: str | None = None, cap_kb: int | None = None) -> Exec:
    """Run argv in a session of its own, bounded by `timeout`; nothing outlives it.

    The wall time runs from just before the fork to the moment the leader
    exits (a pidfd wakes us, no polling delay).  CPU time is the leader's and
    that of the children it reaped.
    """
    out_path, err_path = cwd / "stdout.txt", cwd / "stderr.txt"
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(out_path, "wb") as out, open(err_path, "wb") as err, _no_interrupt():
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                start_new_session=True)
        _live[proc.pid] = proc
    watcher = RssWatch(proc.pid, watch, cap_kb)
    watcher.start()
    timed_out = False
    cpu = 0.0
    try:
        timed_out = not _wait_exit(proc.pid, timeout, watcher)
        if timed_out or watcher.capped:
            seconds = time.monotonic() - started
            kill_session(proc.pid, grace=1.0)
            proc.wait(timeout=10)
        else:
            seconds = time.monotonic() - started
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            cpu = usage.ru_utime + usage.ru_stime
    finally:
        watcher.stop()
        leftovers = kill_session(proc.pid)  # normally none: report them if any
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
        _live.pop(proc.pid, None)
    return Exec(proc.returncode, seconds, cpu, out_path.read_text(errors="replace"),
                err_path.read_text(errors="replace"), watcher.peak_kb, timed_out, watcher.capped, len(leftovers))


def _wait_exit(pid: int, timeout: float, watcher: RssWatch) -> bool:
    """Block until process `pid` exits (True) or timeout / the RSS cap (False); do not reap."""
    deadline = time.monotonic() + timeout
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or watcher.capped:
                return False
            if fd is not None:
                if select.select([fd], [], [], min(left, 0.5))[0]:
                    return True
            else:  # no pidfd: poll without reaping
                try:
                    if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                        return True
                except ChildProcessError:
                    return True
                time.sleep(0.005)
    finally:
        if fd is not None:
            os.close(fd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
