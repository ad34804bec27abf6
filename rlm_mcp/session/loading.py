"""What a load_context call loads, remembered by its arguments and planned against the roots of the day.

A load is planned here, in the server: the path resolved and vetted against the roots, a tree's files
chosen; the worker is only told which files to read.
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import os
import secrets
import shutil
import threading
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp import safefs
from rlm_mcp.bridge import ops
from rlm_mcp.config import Settings
from rlm_mcp.contexts.paths import FileSource, resolve_source
from rlm_mcp.contexts.remote import canonical, check_allowed, fetch, scheme_of
from rlm_mcp.contexts.selection import Caps, Selection, select_files
from rlm_mcp.errors import ContextError, TooLarge, UserError
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
) -> tuple[ops.LoadRequest, Selection | None]:
    """The load request for `context` (setting its `source`), vetted against today's roots: its fields, as
    WorkerClient.load sends them; a URL is fetched into `fetch_into` first (the session's cache, which its
    worker may read)."""
    if context.value is not None:
        context.source = "its parent's value"
        return ops.LoadRequest(name=context.name, kind="value", value=context.value), None
    if context.text is not None:
        if len(context.text) > settings.inline_text_max_chars:
            raise UserError(
                f"`text` has {len(context.text):,} characters, over the {settings.inline_text_max_chars:,} "
                "limit for inline input; write it to a file under a root and load it by `path`"
            )
        context.source = "inline text"
        return ops.LoadRequest(name=context.name, kind="text", text=context.text), None
    assert context.path is not None
    if scheme_of(context.path) is not None:
        if fetch_into is None:
            raise ContextError(f"{context.path!r} is a URL, which only a session fetches")
        _claim(fetch_into, context)
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
) -> tuple[ops.LoadRequest, str, Selection | None]:
    """Fetch an allowed URL into the session's cache (one directory per canonical URL, made afresh), then
    plan the load of what arrived as a local load under that directory. Blocking, so it runs in a thread.
    A session fetches one URL at a time, within --fetch-total-mb for all its copies but those this load
    replaces (its URL's, and those only a context of the same name uses, which stay until it is loaded)."""
    url = check_allowed(url.strip(), settings.allow_url)
    fetch_into = safefs.private_dir(fetch_into)
    destination = fetch_into / copy_key(url)
    with _fetch_lock(fetch_into):
        _remove(_unused(fetch_into))
        total = settings.fetch_total_mb * MiB
        besides = {destination.name, *_replaced(fetch_into, name)}
        left = total - _usage(fetch_into, besides)
        if left <= 0:
            raise ContextError(_over_total(url, total, fetch_into, besides))
        limit = min(settings.fetch_max_mb * MiB, left)
        try:
            fetched = fetch(url, destination, limit, settings.dir_max_files, settings.dir_max_file_bytes,
                            settings.allow_url)  # fmt: skip
        except TooLarge as exc:
            if limit == settings.fetch_max_mb * MiB:
                raise
            raise ContextError(_over_total(url, total, fetch_into, besides, exc.size)) from None
    local = settings.model_copy(update={"roots": (destination,)})
    request, _, selection = plan_path_load(local, name, str(fetched.local), exclude)
    if selection is not None:
        by_total = limit < settings.fetch_max_mb * MiB
        for reason, count in fetched.skipped.items():
            said = not_fetched(reason, settings, by_total)
            selection.skipped[said] += count
            if fetched.examples.get(reason):
                selection.examples[said] = fetched.examples[reason]
    return request, url, selection


def not_fetched(reason: str, settings: Settings, by_total: bool) -> str:
    """A reason a tree load left files or links out, as the model reads it: what, and the cap by its flag."""
    if reason == "over_caps" and by_total:
        return f"files not fetched (over --fetch-total-mb, {settings.fetch_total_mb:,} MiB this session may hold)"
    caps = {
        "over_caps": f"over --fetch-max-mb, {settings.fetch_max_mb:,} MiB per load",
        "over_files": f"over --dir-max-files, {settings.dir_max_files:,} per load",
        "too_large": f"over --dir-max-file-bytes, {settings.dir_max_file_bytes:,} bytes per file",
        "bad_name": "names that cannot be local file names",
        "refused": "refused or gone",
    }
    if reason in caps:
        return f"files not fetched ({caps[reason]})"
    listed = {
        "link_outside": "links not fetched (outside --allow-url)",
        "link_refused": "links not fetched (not a URL that may be sent)",
        "page_refused": "index pages not read (refused or gone)",
        "index_pages_over_cap": "index pages not read (over the most one load reads)",
    }
    return listed.get(reason, f"files not fetched ({reason.replace('_', ' ')})")


def _over_total(url: str, total: int, fetch_into: Path, besides: set[str], size: int | None = None) -> str:
    """Why a URL does not fit in --fetch-total-mb: its size where known, and which contexts hold the room."""
    held = _usage(fetch_into, besides)
    holders = _holders(fetch_into, besides)
    what = f"{url!r} is {size:,} bytes" if size else f"{url!r} does not fit"
    by = f" held by: {', '.join(holders)}" if holders else " held"
    free = f"unload({holders[0]!r}) first" if holders else "unload(name) a context loaded from a URL first"
    return (
        f"{what}; {held:,} of the {total:,} bytes this session may hold of fetched URLs (--fetch-total-mb) are{by}; "
        f"{free}, or restart rlm-mcp with a larger --fetch-total-mb"
    )


# -- the session's fetched copies: one per canonical URL, freed when no context uses it ------------------


@dataclass
class _Users:
    """Who uses one session's fetched copies. A context is claimed when its load is planned; once the
    session has shown it loaded (`release_fetched`), it uses its copy only while it stays loaded. One never
    shown loaded is a load in flight, or a failed one, and holds its copy until it is collected."""

    claimed: weakref.WeakValueDictionary[int, LoadedContext] = field(default_factory=weakref.WeakValueDictionary)
    shown: weakref.WeakValueDictionary[int, LoadedContext] = field(default_factory=weakref.WeakValueDictionary)
    loaded: set[int] = field(default_factory=set)

    def using(self) -> list[LoadedContext]:
        return [c for c in list(self.claimed.values()) if id(c) not in self.shown or id(c) in self.loaded]


_users: dict[str, _Users] = {}
_users_lock = threading.Lock()
_fetch_locks: dict[str, threading.Lock] = {}


def copy_key(url: str) -> str:
    """The name of a canonical URL's copy in the session's fetched/ directory."""
    return hashlib.sha256(url.encode()).hexdigest()[:24]


def _claim(fetch_into: Path, context: LoadedContext) -> None:
    with _users_lock:
        _users.setdefault(str(fetch_into), _Users()).claimed[id(context)] = context


def _fetch_lock(fetch_into: Path) -> threading.Lock:
    with _users_lock:
        return _fetch_locks.setdefault(str(fetch_into), threading.Lock())


def _key_of(context: LoadedContext) -> str | None:
    if context.path is None or scheme_of(context.path) is None:
        return None
    try:
        return copy_key(canonical(context.path.strip(), pattern=True))
    except ContextError:
        return None


def _replaced(fetch_into: Path, name: str) -> set[str]:
    """The copies that only contexts named `name` use: a load under that name replaces them."""
    with _users_lock:
        users = _users.get(str(fetch_into))
        using = [] if users is None else users.using()
    keys = {_key_of(context) for context in using if context.name == name}
    return {key for key in keys if key is not None} - {_key_of(context) for context in using if context.name != name}


def _unused(fetch_into: Path, loaded: Iterable[LoadedContext] | None = None, everything: bool = False) -> list[Path]:
    """The copies under `fetch_into` that no context uses (all of them if `everything`), renamed out of
    their key's way at once, so a new fetch of that URL never meets them; removing them is the caller's.
    `loaded`: the session's loaded contexts now (None: as it last said)."""
    current = [] if loaded is None else list(loaded)
    with _users_lock:
        users = _users.pop(str(fetch_into), None) if everything else _users.setdefault(str(fetch_into), _Users())
        if users is not None and loaded is not None:
            users.shown.update({id(context): context for context in current})
            users.loaded = {id(context) for context in current}
        using = [] if everything or users is None else [*users.using(), *current]
        used = {_key_of(context) for context in using}
        try:
            entries = sorted(os.scandir(fetch_into), key=lambda entry: entry.name)
        except OSError:
            return []
        doomed = []
        for entry in entries:
            key = entry.name.partition(".")[0]
            if ".free-" in entry.name:
                doomed.append(Path(entry.path))
            elif key not in used:
                freed = fetch_into / f"{key}.free-{secrets.token_hex(6)}"
                os.rename(entry.path, freed)
                doomed.append(freed)
        return doomed


def _holders(fetch_into: Path, besides: set[str]) -> list[str]:
    """The names of the contexts that use the session's copies, but those of the keys `besides`."""
    with _users_lock:
        users = _users.get(str(fetch_into))
        using = [] if users is None else users.using()
    return sorted({context.name for context in using if _key_of(context) not in besides})


def _remove(paths: list[Path]) -> int:
    """Remove the copies `paths`; the bytes they held."""
    freed = 0
    for path in paths:
        freed += _bytes_of(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return freed


def _bytes_of(path: Path) -> int:
    if not path.is_dir() or path.is_symlink():
        try:
            return path.lstat().st_size
        except OSError:
            return 0
    used = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                used += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return used


def _usage(fetch_into: Path, besides: set[str]) -> int:
    """Bytes of the copies under `fetch_into`, but those of the keys `besides` (about to be replaced) and
    those being removed."""
    used = 0
    for entry in os.scandir(fetch_into):
        if entry.name.partition(".")[0] in besides or ".free-" in entry.name:
            continue
        for directory, _, files in os.walk(entry.path):
            for name in files:
                try:
                    used += os.lstat(os.path.join(directory, name)).st_size
                except OSError:
                    continue
        if entry.is_file(follow_symlinks=False):
            used += entry.stat(follow_symlinks=False).st_size
    return used


async def release_fetched(
    fetch_into: Path, loaded: Iterable[LoadedContext] | None = None, everything: bool = False
) -> int:
    """Free the session's fetched copies that none of its `loaded` contexts uses, nor a load in flight
    (after an unload, a reload under the same name, a failed load), or all of them when the session closes
    (a resumed session fetches again); the bytes freed."""
    doomed = _unused(fetch_into, loaded, everything)
    if not doomed:
        return 0
    return await anyio.to_thread.run_sync(_remove, doomed)


def plan_path_load(
    settings: Settings, name: str, path: str, exclude: tuple[str, ...]
) -> tuple[ops.LoadRequest, str, Selection | None]:
    """Resolve and vet the path, and for a tree pick the files; blocking, so it runs in a thread."""
    source = resolve_source(path, settings.roots)
    if isinstance(source, FileSource):
        request = ops.LoadRequest(
            name=name,
            kind="file",
            path=str(source.path),
            size=source.size,
            mmap_bytes=settings.mmap_threshold_mb * MiB,
            max_bytes=settings.max_file_bytes,
        )
        return request, str(source.path), None
    caps = Caps(settings.dir_max_files, settings.dir_max_bytes, settings.dir_max_file_bytes)
    selection = select_files(source, settings.roots, caps, exclude)
    shown = str(source.base / source.pattern) if source.pattern else str(source.base)
    if not selection.files:
        skipped = skipped_text(selection)
        what = f"no files match {source.pattern!r} under {source.base}" if source.pattern else f"{shown} is empty"
        raise ContextError(what + (f" that can be loaded ({skipped})" if skipped else ""))
    request = ops.LoadRequest(
        name=name,
        kind="files",
        root=str(source.base),
        files=selection.files,
        max_file_bytes=settings.dir_max_file_bytes,
        max_total_bytes=settings.dir_max_bytes,
    )
    return request, shown, selection
