"""gevent's monkey patching, done once per process and quickly."""

from __future__ import annotations

_patched = False  # once per process: tm-run's forked children come patched


def monkey_patch(skip: bool) -> None:
    """gevent's monkey patching, before the user's module is imported.

    So that ordinary blocking libraries (socket, time.sleep, urllib...) used
    by get_jobs or handle_job cooperate with the greenlets.
    """
    global _patched
    if not skip and not _patched:
        _patched = True
        from importlib import metadata

        from gevent import monkey

        # patch_all announces each module it patches to plugins registered as
        # entry points, and looks them up afresh every time: 25 scans of every
        # installed distribution's metadata, about 0.1 s of each process's
        # start-up.  One scan serves them all; plugins are still called.
        real_entry_points = metadata.entry_points
        every = real_entry_points()
        metadata.entry_points = lambda **params: every.select(**params) if params else every
        try:
            monkey.patch_all()
        finally:
            metadata.entry_points = real_entry_points
