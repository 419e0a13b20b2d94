"""How a user's job is shown in files and messages: short, and never raising."""

from __future__ import annotations

from typing import Any


def short_repr(value: Any, limit: int = 200) -> str:
    """repr(value), cut to `limit` characters; a type name when repr itself fails."""
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
