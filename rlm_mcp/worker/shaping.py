"""Bounding text that goes back to the root model.

The root model pays for every character it is shown, so long text is cut to a head and a tail around a
marker that states how much was left out and where the whole text can be read.
"""

from __future__ import annotations


def elide(text: str, limit: int, where: str | None = None) -> str:
    """Return `text` if it fits in `limit` characters, else its head and tail around a marker.

    Cuts are moved back to a line break when one is near, so the model sees whole lines.
    """
    if len(text) <= limit:
        return text
    head_len = (limit * 2) // 3
    tail_len = limit - head_len
    head = text[:head_len]
    newline = head.rfind("\n")
    if newline >= head_len * 0.8:
        head = head[: newline + 1]
    tail = text[len(text) - tail_len :]
    newline = tail.find("\n")
    if 0 <= newline <= tail_len * 0.2:
        tail = tail[newline + 1 :]
    omitted = len(text) - len(head) - len(tail)
    whole = f"; the whole text is in {where}" if where else ""
    marker = f"\n[... {omitted:,} of {len(text):,} characters omitted{whole} ...]\n"
    return head + marker + tail
