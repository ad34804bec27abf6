"""Which input a session works on, as the memory sees it: its shape, its kind in words, its content digest.

Findings are filed under the SHA-256 of the content (a file's bytes, a tree's paths and file digests, an
inline text), so a changed file is a new input and never gets facts found in its earlier version. Hashing
a 2 GB file takes over a second, so a digest is computed only when it can matter (a finding exists for an
input of the same kind and size, or one is being written) and kept per path with the file's identity
(device, inode, size, modification and change times): an unchanged file is hashed once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from rlm_mcp.units import MiB

MAX_CACHED_DIGESTS = 50_000  # files whose digest is known by their identity (about 200 bytes each)
KIND_WORDS = {
    "str": "text",
    "mapped": "large text",
    "json": "JSON",
    "jsonl": "JSON Lines records",
    "csv": "CSV rows",
    "pdf": "PDF pages",
    "docx": "Word document",
}


@dataclass(frozen=True)
class InputRef:
    """A loaded input. `size`: bytes (of the file, of the tree's chosen files, of the text as UTF-8)."""

    kind: Literal["file", "tree", "text"]
    size: int
    path: Path | None = None  # a file
    base: Path | None = None  # a tree: its files, relative to base
    files: tuple[str, ...] = ()
    text_digest: str | None = None  # a text: its digest, known at once
    description: str = field(default="", compare=False)
    identity: str | None = field(default=None, compare=False)  # a file's when loaded: findings only while it holds


def input_of(request: dict[str, Any], description: str = "", tree_bytes: int = 0) -> InputRef:
    """The input a worker load request (session/loading.py's plan) reads; `tree_bytes`: a tree's chosen
    files' total size, as the selection counted it."""
    kind = request.get("kind")
    if kind == "file":
        path = Path(request["path"])
        return InputRef("file", int(request["size"]), path=path, description=description, identity=identity_of(path))
    if kind == "files":
        files = tuple(request["files"])
        return InputRef("tree", tree_bytes, base=Path(request["root"]), files=files, description=description)
    data = request["text"] if kind == "text" else _canonical_json(request.get("value"))
    encoded = data.encode("utf-8", "surrogatepass")
    return InputRef("text", len(encoded), text_digest=hashlib.sha256(encoded).hexdigest(), description=description)


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def describe(kind: str, source: str, size: int, files: list[str] | None = None) -> str:
    """The kind of input in words, for matching behaviors to it: "JSON Lines records file .jsonl, 12 MB",
    "directory of 120 files: .py 100, .md 12, .toml 1"."""
    if files is not None:
        suffixes = Counter(PurePosixPath(name).suffix.lower()[:16] or "(no suffix)" for name in files)
        common = ", ".join(f"{suffix} {count}" for suffix, count in suffixes.most_common(4))
        return f"directory of {len(files):,} files: {common}"
    if source == "inline text":
        return f"inline {KIND_WORDS.get(kind, kind)}"
    suffix = "".join(PurePosixPath(source).suffixes[-2:]).lower()[:24]
    return f"{KIND_WORDS.get(kind, kind)} file {suffix or '(no suffix)'}, {_size(size)}"


def _size(size: int) -> str:
    return f"{size / MiB:,.0f} MB" if size >= MiB else f"{size / 1024:,.0f} KB"


def hash_file(path: Path) -> tuple[str, str]:
    """A regular file's SHA-256 and identity, never through a link, a FIFO or a device."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        os.set_blocking(descriptor, True)
        digest = hashlib.sha256()
        while chunk := os.read(descriptor, 4 * MiB):
            digest.update(chunk)
        return digest.hexdigest(), identity(info)
    finally:
        os.close(descriptor)


def identity(info: os.stat_result) -> str:
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}:{info.st_ctime_ns}"


def identity_of(path: Path) -> str | None:
    try:
        return identity(os.stat(path, follow_symlinks=False))
    except OSError:
        return None


def recorded_digests(connection: sqlite3.Connection, paths: list[Path]) -> dict[Path, tuple[str, str]]:
    """Path -> (identity, digest) as recorded when each file was last hashed."""
    recorded = {}
    for path in paths:
        row = connection.execute("SELECT identity, digest FROM file_digests WHERE path = ?", (str(path),)).fetchone()
        if row is not None:
            recorded[path] = (row[0], row[1])
    return recorded


def still_valid(recorded: dict[Path, tuple[str, str]]) -> dict[Path, str]:
    """The recorded digests of files whose identity has not changed since (stat'ed outside any transaction)."""
    return {path: digest for path, (ident, digest) in recorded.items() if identity_of(path) == ident}


def keep_digests(connection: sqlite3.Connection, hashed: dict[Path, tuple[str, str]]) -> None:
    connection.executemany(
        "INSERT OR REPLACE INTO file_digests (path, identity, digest) VALUES (?, ?, ?)",
        [(str(path), ident, digest) for path, (digest, ident) in hashed.items()],
    )
    (count,) = connection.execute("SELECT COUNT(*) FROM file_digests").fetchone()
    if count > MAX_CACHED_DIGESTS:
        connection.execute(
            "DELETE FROM file_digests WHERE rowid IN (SELECT rowid FROM file_digests ORDER BY rowid LIMIT ?)",
            (count - MAX_CACHED_DIGESTS,),
        )


def paths_of(ref: InputRef) -> list[Path]:
    if ref.kind == "file" and ref.path is not None:
        return [ref.path]
    if ref.kind == "tree" and ref.base is not None:
        return [ref.base / name for name in ref.files]
    return []


def combine(ref: InputRef, digests: dict[Path, str]) -> str:
    """The input's digest from its files' digests (a tree's also covers which paths hold them)."""
    if ref.kind == "text":
        assert ref.text_digest is not None
        return ref.text_digest
    if ref.kind == "file":
        assert ref.path is not None
        return digests[ref.path]
    assert ref.base is not None
    tree = hashlib.sha256(b"tree\0")
    for name in sorted(ref.files):
        tree.update(f"{name}\0{digests.get(ref.base / name, 'unreadable')}\n".encode("utf-8", "surrogatepass"))
    return tree.hexdigest()
