"""What a load_context call loads, remembered by its arguments and planned against the roots of the day.

A load is planned here, in the server: the path resolved and vetted against the roots, a tree's files
chosen; the worker is only told which files to read.
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp import safefs
from rlm_mcp.config import Settings
from rlm_mcp.contexts.paths import ContextError, FileSource, resolve_source
from rlm_mcp.contexts.remote import check_allowed, fetch, scheme_of
from rlm_mcp.contexts.selection import Caps, Selection, select_files
from rlm_mcp.errors import UserError
from rlm_mcp.session.results import (
    skipped_text,
)
from rlm_mcp.units import MiB


@dataclass
class LoadedContext:
    """A loaded context, remembered by the arguments that loaded it: a reload (after a worker death, or on
    resume from a record) plans the load again, so it is checked against the roots of the day."""

    name: str
    path: str | None
    text: str | None
    exclude: tuple[str, ...]
    source: str
    value: dict[str, Any] | list[Any] | None = None  # a child RLM's context passed as data (never recorded)

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "text": self.text, "exclude": list(self.exclude),
                "source": self.source}  # fmt: skip

    @classmethod
    def from_record(cls, item: Any) -> LoadedContext | None:
        """None for anything but the shape as_record writes (records of older versions, or damaged ones)."""
        if not isinstance(item, dict):
            return None
        name, path, text, source = (item.get(key) for key in ("name", "path", "text", "source"))
        exclude = item.get("exclude") or []
        well_formed = (
            isinstance(name, str)
            and isinstance(source, str)
            and (isinstance(path, str), isinstance(text, str)) in ((True, False), (False, True))
            and (path is None or text is None)
            and isinstance(exclude, list)
            and all(isinstance(pattern, str) for pattern in exclude)
        )
        if not well_formed:
            return None
        try:
            check_context_name(name)
        except UserError:
            return None
        return cls(name, path, text, tuple(exclude), source)


def check_context_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UserError(f"name {name!r} is not a Python identifier; use letters, digits and _ (e.g. 'logs')")
    if name.startswith("_"):
        raise UserError(f"name {name!r} starts with '_', which the REPL reserves; use e.g. {name.lstrip('_')!r}")
    if hasattr(builtins, name):
        raise UserError(f"name {name!r} would hide the Python builtin of that name; choose another")


async def plan_load(
    context: LoadedContext, settings: Settings, fetch_into: Path | None = None
) -> tuple[dict[str, Any], Selection | None]:
    """The worker request that loads `context` (setting its `source`), vetted against today's roots; a URL
    is fetched into `fetch_into` first (the session's cache, which its worker may read)."""
    if context.value is not None:
        context.source = "its parent's value"
        return {"op": "load", "name": context.name, "kind": "value", "value": context.value}, None
    if context.text is not None:
        if len(context.text) > settings.inline_text_max_chars:
            raise UserError(
                f"`text` has {len(context.text):,} characters, over the {settings.inline_text_max_chars:,} "
                "limit for inline input; write it to a file under a root and load it by `path`"
            )
        context.source = "inline text"
        return {"op": "load", "name": context.name, "kind": "text", "text": context.text}, None
    assert context.path is not None
    if scheme_of(context.path) is not None:
        if fetch_into is None:
            raise ContextError(f"{context.path!r} is a URL, which only a session fetches")
        request, context.source, selection = await anyio.to_thread.run_sync(
            plan_url_load, settings, context.name, context.path, context.exclude, fetch_into
        )
        return request, selection
    request, context.source, selection = await anyio.to_thread.run_sync(
        plan_path_load, settings, context.name, context.path, context.exclude
    )
    return request, selection


def plan_url_load(
    settings: Settings, name: str, url: str, exclude: tuple[str, ...], fetch_into: Path
) -> tuple[dict[str, Any], str, Selection | None]:
    """Fetch an allowed URL into the session's cache (a directory per URL, made afresh), then plan the
    load of what arrived as a local load under that directory. Blocking, so it runs in a thread."""
    url = url.strip()
    check_allowed(url, settings.allow_url)
    destination = safefs.private_dir(fetch_into) / hashlib.sha256(url.encode()).hexdigest()[:24]
    caps = (settings.fetch_max_mb * MiB, settings.dir_max_files, settings.dir_max_file_bytes)
    fetched = fetch(url, destination, *caps, settings.allow_url)
    local = settings.model_copy(update={"roots": (destination,)})
    request, _, selection = plan_path_load(local, name, str(fetched.local), exclude)
    if selection is not None:
        for reason, count in fetched.skipped.items():
            selection.skipped[f"not fetched: {reason}"] += count
    return request, url, selection


def plan_path_load(
    settings: Settings, name: str, path: str, exclude: tuple[str, ...]
) -> tuple[dict[str, Any], str, Selection | None]:
    """Resolve and vet the path, and for a tree pick the files; blocking, so it runs in a thread."""
    source = resolve_source(path, settings.roots)
    if isinstance(source, FileSource):
        request = {
            "op": "load",
            "name": name,
            "kind": "file",
            "path": str(source.path),
            "size": source.size,
            "mmap_bytes": settings.mmap_threshold_mb * MiB,
            "max_bytes": settings.max_file_bytes,
        }
        return request, str(source.path), None
    caps = Caps(settings.dir_max_files, settings.dir_max_bytes, settings.dir_max_file_bytes)
    selection = select_files(source, settings.roots, caps, exclude)
    shown = str(source.base / source.pattern) if source.pattern else str(source.base)
    if not selection.files:
        skipped = skipped_text(selection)
        what = f"no files match {source.pattern!r} under {source.base}" if source.pattern else f"{shown} is empty"
        raise ContextError(what + (f" that can be loaded ({skipped})" if skipped else ""))
    request = {
        "op": "load",
        "name": name,
        "kind": "files",
        "root": str(source.base),
        "files": selection.files,
        "max_file_bytes": settings.dir_max_file_bytes,
        "max_total_bytes": settings.dir_max_bytes,
    }
    return request, shown, selection
