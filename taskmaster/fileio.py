"""The master's files on disk: durable, private writes, and reads of files that must be our own.

The state and failures files hold pickled jobs, and unpickling runs code: a
file someone else could have written must never be loaded.  So a file is
read only when it is a regular file (not a link someone planted) owned by
this user and writable by no one else, as checked on the opened descriptor;
files are created with mode 0600, temporary files under names no one else
can choose, and appends never follow a symbolic link.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile

from taskmaster.errors import UsageError

log = logging.getLogger("taskmaster.master")

PRIVATE = 0o600
# O_NONBLOCK: a FIFO planted at the name fails the open instead of hanging it (no effect on a file).
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOT_OURS = "it is not owned by this user"
_WRITABLE = "it is writable by group or others"
_SYMLINK = "it is a symbolic link, which someone else may have planted to make this run use another file"
_PICKLES = "and the jobs pickled in it run code when loaded"
_unsynced_directories: set[str] = set()  # directories whose fsync failed: said once each


def distrust(info: os.stat_result) -> str | None:
    """Why a file with this stat must not be trusted as one of ours; None when it can be."""
    if stat.S_ISLNK(info.st_mode):
        return _SYMLINK
    if not stat.S_ISREG(info.st_mode):
        return "it is not a regular file"
    if info.st_uid != os.geteuid():
        return f"{_NOT_OURS} (owner uid {info.st_uid}, this user uid {os.geteuid()})"
    if info.st_mode & 0o022:
        return f"{_WRITABLE} (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def refusal(path: str, what: str, option: str, reason: str) -> UsageError:
    """The one-line error for a file of pickled jobs we will not load: what is wrong, the risk, how to fix it."""
    if reason.startswith(_NOT_OURS):
        reason, fix = f"{reason}, {_PICKLES}", "if you trust it, chown it to this user; otherwise remove it"
    elif reason.startswith(_WRITABLE):
        reason, fix = f"{reason}, {_PICKLES}", f"if you trust it, chmod go-w {path}; otherwise remove it"
    else:
        fix = "remove it"
    return UsageError(f"refusing the {what} {path}: {reason}; {fix}, or pass {option} with another path")


def read_own_file(path: str, what: str, option: str) -> bytes | None:
    """The content of `path`, which holds pickles; None when there is no such file.

    Raises UsageError, before anything of it is used, when it is not ours
    alone (see `distrust`) or cannot be read.  The checks are made on the
    opened descriptor, so the file cannot be swapped between check and read;
    O_NONBLOCK keeps a planted FIFO from hanging the open.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refusal(path, what, option, _SYMLINK) from None
        raise UsageError(
            f"cannot read {what} {path}: {exc.strerror}; fix its permissions, or pass {option} with another path"
        ) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise UsageError(
                f"cannot read {what} {path}: {os.strerror(errno.EISDIR)}; fix its permissions, "
                f"or pass {option} with another path"
            )
        reason = distrust(info)
        if reason is not None:
            raise refusal(path, what, option, reason)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}; pass {option} with another path") from None
    finally:
        os.close(fd)


def check_writable(path: str, what: str, option: str) -> None:
    """UsageError now, rather than a crash at the first write, if `path` cannot be written.

    Writes nothing: the directory must exist and be writable, and `path`
    must not be a directory, nor anything but a file of ours alone (see
    `distrust`): the state and failures files hold pickled jobs.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        info = os.lstat(path)
    except OSError:
        info = None
    if info is not None and not stat.S_ISDIR(info.st_mode):
        reason = distrust(info)
        if reason is not None:
            raise refusal(path, what, option, reason)
    if os.path.isdir(path):
        raise UsageError(f"the {what} {path} is a directory: pass {option} with a file path")
    if not os.path.isdir(directory):
        raise UsageError(f"the directory of the {what} {path} does not exist: create it, or pass another {option}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write the {what} in {directory}: fix its permissions, or pass another {option}")


def write_atomically(path: str, data: bytes) -> None:
    """Replace `path` with `data` so a crash leaves either the old or the new file.

    Write a temporary file beside it (mode 0600), fsync it, rename it over the
    old one, then fsync the directory so the rename itself survives a crash.
    The temporary file's name is random and created exclusively (mkstemp), so
    a link planted at a name we would use is never followed; the rename
    replaces a link at `path` itself rather than writing through it.
    Only a failure up to the rename is a failed write (OSError); the data
    is in place after it, so a failed fsync of the directory is a warning.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=directory)
    try:
        try:
            view = memoryview(data)
            while view:  # a short write is possible on a nearly full disk
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        _remove_quietly(tmp)  # a full disk must not also collect half-written temporary files
        raise
    try:
        fsync_directory(directory)
    except OSError as exc:
        _warn_unsynced(directory, path, exc)


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _warn_unsynced(directory: str, path: str, exc: OSError) -> None:
    """Once per directory: some file systems refuse to fsync one every time, and every save would say so."""
    if directory in _unsynced_directories:
        return
    _unsynced_directories.add(directory)
    log.warning(
        "cannot fsync the directory %s (%s): %s is written, but a power cut may bring back its previous "
        "version (said once for this directory)",
        directory,
        exc.strerror or exc,
        path,
        extra={"event": "directory_fsync_failed", "path": directory},
    )


def fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_private_append(path: str) -> int:
    """Open `path` for appending, creating it with mode 0600.

    Raises OSError - PermissionError, whose strerror says why - for a
    symbolic link or a file that is not ours alone: what we append (failed
    jobs, log lines with job data) must not reach another user's file.
    """
    try:
        fd = os.open(path, _APPEND, PRIVATE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PermissionError(errno.EPERM, _SYMLINK, path) from None
        raise
    reason = distrust(os.fstat(fd))
    if reason is not None:
        os.close(fd)
        raise PermissionError(errno.EPERM, reason, path)
    return fd
