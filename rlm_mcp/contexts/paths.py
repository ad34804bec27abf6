"""Resolving a user-supplied path safely against the allowed roots.

Everything is checked on the fully resolved path (symlinks followed, `..` collapsed), and the "outside the
roots" check comes before the existence check, so the server never reveals whether a file outside the
roots exists.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from rlm_mcp.errors import ContextError

GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class FileSource:
    path: Path
    size: int


@dataclass(frozen=True)
class TreeSource:
    """A directory, or the fixed leading part of a glob plus the pattern below it."""

    base: Path
    pattern: str | None = None


def has_glob(text: str) -> bool:
    return any(char in GLOB_CHARS for char in text)


def within(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def _roots_text(roots: tuple[Path, ...]) -> str:
    return ", ".join(str(root) for root in roots)


def _split_glob(raw: str) -> tuple[str, str]:
    """'src/**/*.py' -> ('src', '**/*.py'): the part without wildcards, and the pattern below it."""
    parts = raw.split("/")
    for index, part in enumerate(parts):
        if has_glob(part):
            return "/".join(parts[:index]) or ("/" if raw.startswith("/") else "."), "/".join(parts[index:])
    return raw, ""


def _candidate(raw: str, roots: tuple[Path, ...]) -> Path:
    path = Path(raw).expanduser()
    if path.is_absolute():
        return path
    for root in roots:
        if (root / path).exists():
            return root / path
    return roots[0] / path


def resolve_source(raw: str, roots: tuple[Path, ...]) -> FileSource | TreeSource:
    raw = raw.strip()
    if not raw:
        raise ContextError("`path` is empty: give a file, a directory or a glob under " + _roots_text(roots))
    base_text, pattern = _split_glob(raw) if has_glob(raw) else (raw, "")
    if pattern and ".." in pattern.split("/"):
        raise ContextError(f"the glob {raw!r} uses '..' after a wildcard; write the directory part out in full")
    resolved = _candidate(base_text, roots).resolve()
    if not within(resolved, roots):
        raise ContextError(
            f"{raw!r} is outside the allowed roots ({_roots_text(roots)}), or leads out of them through '..' or a "
            "symlink. Load a path under a root, or restart rlm-mcp with --root (RLM_MCP_ROOTS) to allow another "
            "directory."
        )
    try:
        info = os.stat(resolved)
    except FileNotFoundError:
        raise ContextError(
            f"{raw!r} does not exist (looked for {resolved}); relative paths are resolved against "
            f"the allowed roots: {_roots_text(roots)}"
        ) from None
    except OSError as exc:
        raise ContextError(f"cannot read {raw!r}: {exc.strerror}") from None

    if pattern:
        if not stat.S_ISDIR(info.st_mode):
            raise ContextError(f"the fixed part of the glob {raw!r} ({resolved}) is not a directory")
        return TreeSource(resolved, pattern)
    if stat.S_ISDIR(info.st_mode):
        return TreeSource(resolved)
    if not stat.S_ISREG(info.st_mode):
        raise ContextError(
            f"{raw!r} is {describe_mode(info.st_mode)}, not a regular file; only files, directories and globs "
            "can be loaded"
        )
    return FileSource(resolved, info.st_size)


def describe_mode(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"
