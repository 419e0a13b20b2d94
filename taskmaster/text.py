"""Values as people read them: a user's job in files and messages (short, never raising), a duration."""

from __future__ import annotations

from typing import Any


def short_repr(value: Any, limit: int = 200) -> str:
    """repr(value), cut to `limit` characters; a type name when repr itself fails."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def duration_text(seconds: float | None) -> str:
    """H:MM:SS, as tm-status and the progress line show elapsed time and ETA; "unknown" for None."""
    if seconds is None:
        return "unknown"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
