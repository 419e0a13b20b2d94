"""gevent's monkey patching, done once per process and quickly."""

from __future__ import annotations

import os
import sys
from importlib.machinery import PathFinder

_patched = False  # once per process: tm-run's forked children come patched
PLUGIN_GROUP = "gevent.plugins"  # the entry point groups gevent calls while it patches start with this
# gevent's own plugin: a warning when signal is patched but not os (patch_all patches both).
GEVENTS_OWN_PLUGINS = {("gevent.plugins.monkey.will_patch_all", "gevent.monkey:_subscribe_signal_os")}


def monkey_patch(skip: bool) -> None:
    """gevent's monkey patching, before the user's module is imported.

    So that ordinary blocking libraries (socket, time.sleep, urllib...) used
    by get_jobs or handle_job cooperate with the greenlets.

    While it patches, gevent announces each step to plugins registered as
    entry points: it imports importlib.metadata and scans every installed
    distribution's metadata 25 times, on every start of every master and
    slave (see docs/performance.rst, "gevent's plugin scan").  Where the
    only plugin installed is gevent's own (the usual case, read off the
    metadata files in a millisecond), it is called directly; otherwise gevent
    looks them up, from one scan.

    ``_strptime`` is imported first (see ``_keep_real_locks``).
    """
    global _patched
    if skip or _patched:
        return
    _patched = True
    _keep_real_locks()
    from gevent import events, monkey

    if _declared_plugins() <= GEVENTS_OWN_PLUGINS:

        def notify(event: object) -> None:
            events.notify(event)  # the subscribers registered in this process
            if isinstance(event, events.GeventWillPatchAllEvent):
                monkey._subscribe_signal_os(event)

        real_notify = events.notify_and_call_entry_points
        events.notify_and_call_entry_points = notify
        try:
            monkey.patch_all()
        finally:
            events.notify_and_call_entry_points = real_notify
        return
    from importlib import metadata

    real_entry_points = metadata.entry_points
    every = real_entry_points()
    metadata.entry_points = lambda **params: every.select(**params) if params else every
    try:
        monkey.patch_all()
    finally:
        metadata.entry_points = real_entry_points


def _keep_real_locks() -> None:
    """Import the standard modules whose lock guards only computation before patching, so it stays a real lock.

    Patching turns every lock created afterwards into a gevent lock, which
    costs thousands of instructions per acquire and release where a real one
    costs a few dozen.  ``datetime.strptime`` takes ``_strptime``'s cache lock
    on every call, and a migration parses a date per row: with a gevent lock
    the db benchmark's job ran measurably more instructions (see
    docs/performance.rst, "_strptime's lock").  A real lock is safe there
    because nothing inside it can switch greenlets (locale queries and a regex compile, no
    I/O): a greenlet can never find it held by another greenlet of its thread.
    """
    import _strptime  # noqa: F401  (imported for its side effect: the lock is made now)


def _declared_plugins() -> set[tuple[str, str]]:
    """(group, object) of every gevent plugin the installed distributions declare, read off their files.

    Only ``*.dist-info`` and ``*.egg-info`` directories on sys.path are read;
    anything else that may hold distributions (a zip on sys.path, a finder
    other than the standard one) yields an unknown plugin, so that gevent
    looks for itself.
    """
    unknown = {("?", "?")}
    if any(hasattr(finder, "find_distributions") and finder is not PathFinder for finder in sys.meta_path):
        return unknown
    found: set[tuple[str, str]] = set()
    for entry in sys.path:
        directory = entry or "."
        if os.path.isfile(directory):
            return unknown
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if name.endswith((".dist-info", ".egg-info")):
                try:
                    with open(os.path.join(directory, name, "entry_points.txt"), encoding="utf-8") as f:
                        text = f.read()
                except FileNotFoundError:
                    continue
                except (OSError, UnicodeDecodeError):
                    return unknown
                if PLUGIN_GROUP in text:
                    found |= _plugin_entries(text)
    return found


def _plugin_entries(text: str) -> set[tuple[str, str]]:
    """(group, object) of the gevent plugin entry points in one entry_points.txt."""
    entries: set[tuple[str, str]] = set()
    group = ""
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
        elif group.startswith(PLUGIN_GROUP) and "=" in line:
            entries.add((group, line.split("=", 1)[1].strip()))
    return entries
