"""Secret files: the one --secret-file names, and the per-user default one.

Without --secret-file (and without --insecure) every command of one user on
one host uses the same secret, created on first use at
``$XDG_CONFIG_HOME/taskmaster/secret`` (``~/.config/taskmaster/secret``):
a directory 0700 and a file 0600, both owned by the user, or it is refused.
The config directory rather than ``$XDG_RUNTIME_DIR``: that one exists only
within a login session (not under cron, a systemd service or ``su``), so a
master and slaves started in different ways would disagree on the secret.

Nothing here imports zmq: ``tm-run`` writes its per-run secret with it
before any child starts.
"""

from __future__ import annotations

import os
import re
import secrets
import stat

from taskmaster.errors import UsageError

HEADER = "taskmaster-secret-v1"
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
MAX_BYTES = 4096  # a secret file is one line; never read a device or a huge file whole
NEW_SECRET_HINT = "create one with tm-master --new-secret PATH"


def secret_text() -> str:
    return f"{HEADER} {secrets.token_hex(32)}\n"


def new_secret_file(path: str) -> None:
    """Write a fresh random secret to `path`, mode 0600; never overwrite one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    except FileExistsError:
        raise UsageError(f"{path} already exists: remove it first, or choose another path") from None
    except OSError as exc:
        raise UsageError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as f:
        f.write(secret_text())
        f.flush()
        os.fsync(f.fileno())


def _parse(text: str, path: str) -> bytes:
    match = re.fullmatch(rf"\s*{HEADER}\s+([0-9a-f]{{64}})\s*", text)
    if not match:
        raise UsageError(f"{path} is not a taskmaster secret file; {NEW_SECRET_HINT}")
    return bytes.fromhex(match.group(1))


def _read_regular(fd: int, path: str) -> tuple[str, os.stat_result]:
    """The text of the regular file open at `fd` (closed here) and its status."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UsageError(f"{path} is not a regular file, so not a taskmaster secret file; {NEW_SECRET_HINT}")
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    return data.decode("ascii", "replace"), info


def read_secret(path: str) -> bytes:
    """The secret in the file at `path` (--secret-file); UsageError if it is unusable or open to others.

    Group-readable is fine (Kubernetes mounts secrets 0440 for the pod's
    group, which is no other user); readable or writable by every user is
    refused: such a secret protects nothing, and one anybody can replace
    lets anybody play the master.
    """
    try:
        # O_NONBLOCK: a FIFO at that path would otherwise block until a writer came.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise UsageError(f"cannot read secret file {path}: {exc.strerror}; {NEW_SECRET_HINT}") from None
    text, info = _read_regular(fd, path)
    if info.st_mode & 0o006:
        raise UsageError(
            f"secret file {path} is open to every user (mode {stat.S_IMODE(info.st_mode):04o}), so it protects "
            f"nothing: chmod 600 {path} (or 640 for a group of your own), and make a new one if others read it"
        )
    return _parse(text, path)


def default_secret_path() -> str:
    """Where the default secret of this user lives on this host."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "taskmaster", "secret")


def _refuse(path: str, why: str, fix: str) -> UsageError:
    return UsageError(
        f"refusing the default secret {path}: {why}; {fix}, or pass --secret-file PATH ({NEW_SECRET_HINT})"
    )


def _private_directory(directory: str) -> None:
    """Create `directory` 0700 if need be; UsageError unless it is ours and closed to others."""
    try:
        os.makedirs(os.path.dirname(directory), mode=PRIVATE_DIR, exist_ok=True)
        os.mkdir(directory, PRIVATE_DIR)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _refuse(directory, f"cannot create its directory ({exc.strerror})", "set XDG_CONFIG_HOME") from None
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(directory, "it is not a directory (a symbolic link?)", f"remove {directory}")
    if info.st_uid != os.geteuid():
        raise _refuse(directory, f"owned by uid {info.st_uid}, not by you", f"remove {directory}")
    if info.st_mode & 0o077:
        mode = stat.S_IMODE(info.st_mode)
        raise _refuse(directory, f"open to other users (mode {mode:04o})", f"chmod 700 {directory}")


def _create_once(path: str) -> None:
    """Write a new secret at `path` unless one is there: never a half-written one, whoever races us.

    The secret is written whole to a temporary name, then linked to `path`;
    link never replaces a file, so of two processes starting at once one
    wins and both read its secret.
    """
    temporary = f"{path}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secret_text())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: theirs it is
    finally:
        os.unlink(temporary)


def default_secret() -> tuple[bytes, str]:
    """The secret of this user on this host, created on first use; and its path."""
    path = default_secret_path()
    directory = os.path.dirname(path)
    _private_directory(directory)
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            _create_once(path)
            fd = os.open(path, flags)
    except OSError as exc:
        raise _refuse(path, exc.strerror or str(exc), f"remove {path}") from None
    text, info = _read_regular(fd, path)
    if info.st_uid != os.geteuid():
        raise _refuse(path, f"owned by uid {info.st_uid}, not by you", f"remove {path}")
    if info.st_mode & 0o077:
        raise _refuse(path, f"open to other users (mode {stat.S_IMODE(info.st_mode):04o})", f"chmod 600 {path}")
    return _parse(text, path), path
