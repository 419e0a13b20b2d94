"""Durable, private file writes shared by the checkpoint and the failures file."""

from __future__ import annotations

import logging
import os

from taskmaster.errors import UsageError

log = logging.getLogger("taskmaster.master")

PRIVATE = 0o600
_unsynced_directories: set[str] = set()  # directories whose fsync failed: said once each


def check_writable(path: str, what: str, option: str) -> None:
    """UsageError now, rather than a crash at the first write, if `path` cannot be written.

    Writes nothing: the directory must exist and be writable, and `path`
    must not be a directory.
    """
    directory = os.path.dirname(os.path.abspath(path))
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
    Only a failure up to the rename is a failed write (OSError); the data
    is in place after it, so a failed fsync of the directory is a warning.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE)
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
    """Open `path` for appending, creating it with mode 0600."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE)
