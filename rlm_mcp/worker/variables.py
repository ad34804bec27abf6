"""Short, bounded descriptions of REPL values: what changed in a cell, and the repr of its last line.

Everything here must stay cheap on huge values (a 1 GB string, a dict of 100k files): sizes come from
len(), and previews are built from slices or reprlib, never from a full repr of the value.
"""

from __future__ import annotations

import reprlib
import types
from typing import Any

_CONTAINERS = (list, tuple, dict, set, frozenset)


def _bounded_reprlib(limit: int) -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxstring = max(20, limit)
    short.maxother = max(20, limit)
    short.maxlong = max(20, limit)
    short.maxlevel = 4
    short.maxlist = short.maxtuple = short.maxset = short.maxfrozenset = short.maxdeque = 100
    short.maxdict = 50
    return short


def bounded_repr(value: Any, limit: int) -> str:
    """A repr of `value` that costs about `limit` characters of work, not the size of the value."""
    if isinstance(value, (str, bytes, bytearray)) and len(value) > limit:
        return repr(value[:limit])[:-1] + f"...' ({len(value):,} in all)"
    if isinstance(value, _CONTAINERS):
        return _bounded_reprlib(limit).repr(value)
    try:
        return repr(value)
    except Exception as exc:  # a broken __repr__ in user code must not break the cell's result
        return f"<{type(value).__name__} object; repr() raised {type(exc).__name__}: {exc}>"


def size_of(value: Any) -> int | None:
    if isinstance(value, (types.ModuleType, type, types.FunctionType)):
        return None
    try:
        return len(value)
    except Exception:
        return None


def fingerprint(namespace: dict[str, Any]) -> dict[str, tuple[int, int | None]]:
    """Identity and length of each public name: enough to spot new, rebound and grown variables."""
    return {
        name: (id(value), size_of(value))
        for name, value in namespace.items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def describe(name: str, value: Any, preview_chars: int = 80) -> dict[str, Any]:
    preview = bounded_repr(value, preview_chars)
    if len(preview) > preview_chars:
        preview = preview[: preview_chars - 3] + "..."
    return {"name": name, "type": type(value).__name__, "size": size_of(value), "preview": preview}


def changed_names(before: dict[str, tuple[int, int | None]], after: dict[str, tuple[int, int | None]]) -> list[str]:
    return [name for name, mark in after.items() if before.get(name) != mark]
