"""The failures file: every job failed for good, one JSON object a line.

Appended (and fsynced) before the master counts a job as resolved, so a job
is never lost between "failed" and "recorded".  Each line keeps the job itself
(pickled, base64) so ``--retry-failed`` can run exactly those jobs again.

Every record the master counted ends in a newline.  A last line without one
is what a crash (or a full disk) in the middle of an append leaves behind:
its job was never counted as resolved, so the checkpoint still has it to
run.  The first append of a master cuts such a line off, and ``read`` skips
it with a warning; damage anywhere else is still refused.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import time
from typing import TYPE_CHECKING, Any, BinaryIO

from taskmaster.errors import UsageError
from taskmaster.fileio import open_private_append, read_own_file, write_atomically
from taskmaster.text import short_repr

if TYPE_CHECKING:
    from taskmaster.master.ledger import Ledger
    from taskmaster.wire.protocol import Failure

log = logging.getLogger("taskmaster.master")

READ_BACK_BYTES = 64 * 1024  # looking for the last newline, the file is read backwards this much at a time


def default_path(state_path: str) -> str:
    stem = state_path[: -len(".state")] if state_path.endswith(".state") else state_path
    return stem + ".failures.jsonl"


def record(position: int, job: Any, error_type: str, message: str, traceback: str, attempts: int, slave: str) -> dict:
    return {
        "position": position,
        "job_repr": short_repr(job),
        "type": error_type,
        "message": message,
        "traceback": traceback,
        "attempts": attempts,
        "slave": slave,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "job": base64.b64encode(pickle.dumps(job, protocol=4)).decode(),
    }


def _encode(entry: dict) -> bytes:
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


def _end_of_last_whole_line(f: BinaryIO, size: int) -> int:
    """Where the file's last newline ends (0 if it has none): what to keep of it."""
    end = size
    while end > 0:
        start = max(0, end - READ_BACK_BYTES)
        f.seek(start)
        newline = f.read(end - start).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        end = start
    return 0


class FailureLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def append(self, entry: dict) -> None:
        """Write `entry` durably, or raise OSError and leave the file as it was."""
        if self._fd is None:
            self._fd = self._open()
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            line = memoryview(_encode(entry))
            while line:
                line = line[os.write(self._fd, line) :]
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, end)  # no half line for --retry-failed to stumble on
            except OSError:
                pass
            raise

    def _open(self) -> int:
        fd = open_private_append(self.path)
        try:
            self._cut_partial_last_line(fd)
        except OSError:
            os.close(fd)
            raise
        return fd

    def _cut_partial_last_line(self, fd: int) -> None:
        """Cut off a last line with no newline, before it gets the next record glued to it.

        It never counted: the master counts a failure as resolved only once
        its whole line, newline included, is written and fsynced, so the job
        of a partial line is still to run, and fails (and is recorded) again.
        """
        size = os.fstat(fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:  # fd is for appending only
            keep = _end_of_last_whole_line(f, size)
        if keep == size:
            return
        os.ftruncate(fd, keep)
        os.fsync(fd)
        log.warning(
            "failures file %s: cut off its partial last line (%d bytes, no newline), left by a crash in the "
            "middle of a write; that job was never counted as failed and runs again",
            self.path,
            size - keep,
            extra={"event": "failures_file_repaired", "path": self.path, "bytes": size - keep},
        )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def read(self) -> list[dict]:
        """Every entry, each with its job unpickled under the key 'value'."""
        raw = read_own_file(self.path, "failures file", "--failures-file")  # ours alone, or nothing is unpickled
        if raw is None:
            return []
        lines = raw.split(b"\n")
        if lines.pop().strip():  # what follows the last newline: empty unless a write was cut off
            log.warning(
                "failures file %s: skipped its partial last line (no newline), left by a crash in the middle "
                "of a write; that job was never counted as failed",
                self.path,
                extra={"event": "failures_file_partial_line", "path": self.path},
            )
        entries = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entry["value"] = pickle.loads(base64.b64decode(entry["job"], validate=True))
            except Exception as exc:
                raise UsageError(
                    f"failures file {self.path} is corrupt at line {number} ({type(exc).__name__}: {exc}); "
                    "fix or remove that line"
                ) from None
            entries.append(entry)
        # A job can be recorded twice when the master died between recording
        # it and the next checkpoint; the latest record of that job wins.  A
        # job is known by its pickle, not its position: a resumed get_jobs may
        # yield another sequence, so one position can name two jobs.
        latest = {entry["job"]: entry for entry in entries}
        return sorted(latest.values(), key=lambda entry: entry["position"])

    def rewrite(self, entries: list[dict]) -> None:
        self.close()
        clean = [{k: v for k, v in e.items() if k != "value"} for e in entries]
        write_atomically(self.path, b"".join(_encode(e) for e in clean))


class FailedJobs:
    """What becomes of a job whose handler raised: another try, or a line in the failures file.

    In a ``--retry-failed`` replay (`replay` holds the file's entries) the
    jobs are numbered by their place in the file; the records keep their
    original positions, and the file is rewritten once the replay is over -
    with the jobs that failed again - rather than appended to.
    """

    def __init__(self, path: str, max_retries: int) -> None:
        self.file = FailureLog(path)
        self.max_retries = max_retries
        self.replay: list[dict] | None = None
        self.failed_again: list[dict] = []
        self.retried = 0  # failed tries handed out again, this run (a metric)

    def start_replay(self) -> list[Any]:
        """Read the failures file for a replay; the jobs to run, in file order."""
        self.replay = self.file.read()
        return [entry["value"] for entry in self.replay]

    def failed(self, ledger: Ledger, failure: Failure, slave: str) -> None:
        """Retry the job or record it as failed for good.

        Raises OSError, with the job still unresolved, when the record cannot
        be written: it must not count as resolved without one.
        """
        position = failure.position
        if not ledger.is_pending(position):
            return  # resolved already (its batch was re-sent and finished elsewhere)
        attempts = ledger.attempts.get(position, 0) + 1
        ledger.attempts[position] = attempts
        shown = position if self.replay is None else self.replay[position]["position"]
        if attempts <= self.max_retries:
            log.info(
                "job %d failed on %s (%s: %s); retry %d of %d",
                shown,
                slave,
                failure.type,
                failure.message,
                attempts,
                self.max_retries,
                extra={"event": "job_retried", "position": shown, "slave": slave, "attempts": attempts},
            )
            ledger.retry(position, slave)
            self.retried += 1
            return
        entry = record(shown, ledger.value(position), failure.type, failure.message, failure.traceback, attempts, slave)
        if self.replay is not None:
            self.failed_again.append(entry)
        else:
            self.file.append(entry)  # durable before the job counts as resolved
        ledger.mark_failed(position)
        log.error(
            "job %d failed for good after %d attempts: %s: %s",
            shown,
            attempts,
            failure.type,
            failure.message,
            extra={
                "event": "job_failed",
                "position": shown,
                "slave": slave,
                "attempts": attempts,
                "error": failure.type,
            },
        )

    def finish_replay(self) -> None:
        """After a whole replay: the file keeps only the jobs that failed again."""
        self.file.rewrite(self.failed_again)
