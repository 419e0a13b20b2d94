"""The state file: where an interrupted run resumes.

One JSON document, replaced atomically at least once a second while jobs
finish and on exit.  It names an *anchor* job - normally the first job not yet
finished - by position and value, plus the jobs from the anchor on that are
already resolved: their positions and a fingerprint of each.  A resumed run
calls ``get_jobs(last=value)``, numbers the jobs it yields from the anchor's
position, and skips a job only when it is one of the resolved ones by its
fingerprint (``taskmaster.identity``), never by its position alone.  Because
the master holds a bounded window of jobs, those fingerprints are bounded
too: the file's size does not grow with the run.

The value is pickled (base64) since jobs are arbitrary picklable objects; the
file is the master's own, written with mode 0600, never anything received
from the network, and it is loaded only when it is still ours alone
(``fileio.read_own_file``).
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import logging
import os
import pickle
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from taskmaster.errors import UsageError
from taskmaster.fileio import read_own_file, write_atomically
from taskmaster.master import identity
from taskmaster.text import short_repr

if TYPE_CHECKING:
    from taskmaster.master.ledger import Ledger

log = logging.getLogger("taskmaster.master")

FORMAT = "taskmaster-state"
VERSION = 2  # 2: fingerprints of the resolved jobs (1 named them by position only)
READABLE = (1, 2)


@dataclass
class State:
    target: str
    kwargs: dict[str, str]
    position: int = 0
    has_anchor: bool = False
    anchor: Any = None
    resolved: list[list[int]] = field(default_factory=list)
    prints: list[bytes] = field(default_factory=list)  # one fingerprint per resolved position, in order
    finished: int = 0
    failed: int = 0
    complete: bool = False
    total: int | None = None

    def matches(self, target: str, kwargs: dict[str, str]) -> bool:
        return self.target == target and self.kwargs == kwargs


def default_path(target: str, kwargs: dict[str, str], directory: str = ".") -> str:
    """A state file name derived from the target and its arguments.

    Different arguments give a different file, so two runs of one module
    with other arguments never share (or refuse) each other's state.
    """
    identity = json.dumps([target, sorted(kwargs.items())])
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(target.replace(":", ".")))[-60:]
    return os.path.join(directory, f"taskmaster-{stem}-{digest}.state")


def save(path: str, state: State) -> None:
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "target": state.target,
        "kwargs": state.kwargs,
        "position": state.position,
        "anchor": base64.b64encode(pickle.dumps(state.anchor, protocol=4)).decode() if state.has_anchor else None,
        "anchor_repr": short_repr(state.anchor) if state.has_anchor else None,
        "resolved": state.resolved,
        "fingerprints": base64.b64encode(identity.join(state.prints)).decode(),
        "finished": state.finished,
        "failed": state.failed,
        "complete": state.complete,
        "total": state.total,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_atomically(path, json.dumps(doc, indent=1).encode() + b"\n")


class Saver:
    """Saves a running master's progress: `base` (where this run started) plus its ledger.

    A save that would write what the file already says is skipped, so a run
    busy with long jobs does not fsync every second for nothing.  A save that
    fails (disk full, directory gone) does not end the run: the file keeps the
    last good state, which is still correct - only older, so a crash would
    redo more jobs - and the next save tries again.  `error` says why the last
    save failed, or is None.
    """

    def __init__(self, path: str, base: State) -> None:
        self.path = path
        self.base = base
        self.error: str | None = None
        self._saved: tuple | None = None

    def save(self, ledger: Ledger, total: int | None, complete: bool = False) -> None:
        base = self.base
        new = State(
            base.target,
            base.kwargs,
            position=base.position,
            has_anchor=base.has_anchor,
            anchor=base.anchor,
            resolved=base.resolved,
            prints=base.prints,
            finished=base.finished + ledger.finished,
            failed=base.failed + ledger.failed,
            complete=complete,
            total=total,
        )
        anchor = ledger.anchor()
        if anchor is not None:
            new.position, new.anchor, new.resolved, new.prints = anchor
            new.has_anchor = True
        elif not complete and not base.has_anchor:
            return  # nothing pulled yet, nothing to remember
        what = (new.position, new.has_anchor, new.finished, new.failed, new.complete, new.total, str(new.resolved))
        if what == self._saved:
            return
        try:
            save(self.path, new)
        except OSError as exc:
            if self.error is None:
                log.error(
                    "cannot write the state file %s: %s; still running, trying again at every checkpoint "
                    "(until then a crash would redo the jobs finished since the last save)",
                    self.path,
                    exc.strerror or exc,
                )
            self.error = f"cannot write the state file {self.path}: {exc.strerror or exc}"
            return
        if self.error is not None:
            log.warning("the state file %s is written again", self.path)
            self.error = None
        self._saved = what


def unfinished_beside(path: str, target: str, kwargs: dict[str, str]) -> list[tuple[str, str, dict[str, str]]]:
    """Unfinished runs of the same target with other arguments, in the state files beside `path`.

    (path, target, arguments) for each, the newest first.  "The same
    target" is the same module name and function however it is written
    (``pkg.jobs`` or ``pkg/jobs.py``), since the spelling is part of a run's
    identity too.  Only the JSON is read (never the pickled anchor), and a
    file that cannot be read is passed over: this is a hint, not a check.
    """
    found = []
    name = _target_name(target)
    for other in glob.glob(os.path.join(glob.escape(os.path.dirname(path) or "."), "taskmaster-*.state")):
        try:
            if os.path.samefile(other, path) if os.path.exists(path) else False:
                continue
            if os.path.getsize(other) > 1 << 20:
                continue
            with open(other, "rb") as f:
                doc = json.loads(f.read())
            other_target, other_kwargs = doc["target"], doc["kwargs"]
            if doc.get("format") != FORMAT or doc.get("complete") is not False:
                continue
            if not isinstance(other_target, str) or not isinstance(other_kwargs, dict):
                continue
            if _target_name(other_target) != name or (other_target, other_kwargs) == (target, kwargs):
                continue
            found.append((os.path.getmtime(other), other, other_target, other_kwargs))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return [(other, other_target, other_kwargs) for _, other, other_target, other_kwargs in sorted(found, reverse=True)]


def _target_name(target: str) -> tuple[str, str]:
    """(module name, function) of a target identity, whether its module is a dotted name or a path."""
    module, _, function = target.rpartition(":")
    base = os.path.basename(module)
    base = base[: -len(".py")] if base.endswith(".py") else base
    return base.rsplit(".", 1)[-1], function


def settle_replay(path: str, target: str, kwargs: dict[str, str], succeeded: int) -> None:
    """After a whole ``--retry-failed`` replay: `succeeded` of the run's failed jobs count as finished.

    The replay writes no progress of its own (its jobs are numbered by their
    place in the failures file, not in the run); only the run's counts change,
    so that running the same command again tells how the run stands now.  A
    state file that is missing or not this run's is left alone; one that
    cannot be rewritten is logged and keeps its old counts.
    """
    try:
        state = load(path, target, kwargs)
    except UsageError as exc:
        log.warning("the counts in the state file were not updated: %s", exc)
        return
    moved = min(succeeded, state.failed) if state is not None else 0
    if not moved:
        return
    state.failed -= moved
    state.finished += moved
    try:
        save(path, state)
    except OSError as exc:
        log.warning("cannot update the counts in the state file %s: %s", path, exc.strerror or exc)


def load(path: str, target: str, kwargs: dict[str, str]) -> State | None:
    """Read the state for this target and arguments; None when there is none.

    Raises UsageError, without touching the file, when it is unreadable,
    not ours alone (checked before anything in it is unpickled), corrupt, or
    written for another target or other arguments.
    """
    raw = read_own_file(path, "state file", "--state-file")
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ValueError("not a taskmaster state file")
        if doc.get("version") not in READABLE:
            raise ValueError(f"unsupported version {doc.get('version')!r}")
        state = State(
            target=_typed(doc, "target", str),
            kwargs=_typed(doc, "kwargs", dict),
            position=_typed(doc, "position", int),
            resolved=_typed(doc, "resolved", list),
            finished=_typed(doc, "finished", int),
            failed=_typed(doc, "failed", int),
            complete=_typed(doc, "complete", bool),
            total=doc.get("total"),
        )
        for pair in state.resolved:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, int) for x in pair)):
                raise ValueError("bad 'resolved' ranges")
        if doc.get("fingerprints") is not None:
            state.prints = identity.split(base64.b64decode(_typed(doc, "fingerprints", str), validate=True))
            if state.prints and len(state.prints) != sum(b - a for a, b in state.resolved):
                raise ValueError("'fingerprints' does not match 'resolved'")
        if doc.get("anchor") is not None:
            state.anchor = pickle.loads(base64.b64decode(doc["anchor"], validate=True))
            state.has_anchor = True
    except Exception as exc:  # any damage to the file: one message, no traceback
        raise UsageError(
            f"state file {path} is corrupt ({type(exc).__name__}: {exc}); move it away, "
            "or run with --reset to start from the beginning"
        ) from None
    if not state.matches(target, kwargs):
        raise UsageError(
            f"state file {path} belongs to target {state.target} with arguments {_args(state.kwargs)}, "
            f"not to {target} with {_args(kwargs)}; pass --state-file with another path, "
            "or --reset to discard it"
        )
    return state


def _typed(doc: dict, key: str, kind: type) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"field {key!r} is missing or not {kind.__name__}")
    return value


def args_text(kwargs: dict[str, str]) -> str:
    """The arguments as on a command line: ``a=1 b=2``, or ``(none)``."""
    return " ".join(f"{k}={v}" for k, v in sorted(kwargs.items())) or "(none)"


_args = args_text

