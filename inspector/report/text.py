"""Text from a checkpoint made safe to show: control characters escaped, over-long names shortened.

Tensor and layer names come from untrusted files: an escape sequence must never reach a terminal
or a Markdown file raw, and a name of 50,000 characters must not make table layout slow.
"""

from __future__ import annotations

MAX_SHOWN = 200  # characters of one name or note shown; the CSV and JSON keep the whole text


def visible(text) -> str:
    """Control characters (escape sequences, NUL, newlines) shown as Python escapes, never sent raw."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in str(text))


def shorten(text, limit: int = MAX_SHOWN) -> str:
    """``text`` when it fits in ``limit`` characters, else its start and end around an ellipsis."""
    s = str(text)
    if len(s) <= limit:
        return s
    tail = limit // 3
    return f"{s[: limit - tail - 1]}…{s[-tail:]}"
