"""File operations for the server's own files, done so that nothing planted beside them can redirect them.

The server's files (session records, traces, the worker's log and captured output, the signing key) live
in directories the REPL worker cannot write. These helpers add a second line on top of that: a final path
component that is a symlink, a FIFO or a device is refused instead of followed or opened (O_NOFOLLOW,
O_NONBLOCK, then a check that it is a regular file), files are created fresh (O_EXCL) rather than
truncated in place, and reads are bounded. A file left by an older layout, or by a worker running with
the sandbox off, can then fail a call, but never make the server write elsewhere, block, or read without
end.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rlm_mcp.errors import UnsafeFileError
from rlm_mcp.units import MiB

OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def private_dir(path: Path) -> Path:
    """Create (mode 0700) or check a directory of the server's; a symlink in its place is refused."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if not stat.S_ISDIR(info.st_mode):
        raise UnsafeFileError(f"{path} is not a directory (a symlink or a file is in its place)")
    return path


@contextlib.contextmanager
def _opened_regular(path: Path, flags: int) -> Iterator[tuple[int, os.stat_result]]:
    """An fd on `path` opened with `flags` (never following a final link, never blocking on a FIFO), once it
    is checked to be a regular file, and closed exactly once afterwards."""
    descriptor = os.open(path, flags | OPEN_FLAGS, 0o600)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{path} is not a regular file")
        os.set_blocking(descriptor, True)
        yield descriptor, info
    finally:
        os.close(descriptor)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def create_fresh(path: Path, *, readable: bool = True) -> int:
    """A new, empty file at `path` (whatever was there is removed first, never followed); returns its fd."""
    _unlink_quietly(path)
    return create_exclusive(path, readable=readable)


def create_exclusive(path: Path, *, readable: bool = True) -> int:
    """A new file at `path`, only if nothing is there (FileExistsError otherwise); returns its fd."""
    mode = os.O_RDWR if readable else os.O_WRONLY
    descriptor = os.open(path, mode | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, 0o600)
    os.set_blocking(descriptor, True)
    return descriptor


def open_append(path: Path) -> int:
    """An fd that appends to the regular file at `path`, creating it; links and FIFOs are refused."""
    with _opened_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) as (descriptor, _):
        return os.dup(descriptor)


def read_bounded(path: Path, max_bytes: int) -> bytes:
    """The whole of a regular file of at most `max_bytes`; anything else raises (FileNotFoundError stays)."""
    with _opened_regular(path, os.O_RDONLY) as (descriptor, info):
        if info.st_size > max_bytes:
            raise UnsafeFileError(f"{path} holds {info.st_size:,} bytes, more than the {max_bytes:,} expected")
        chunks, left = [], max_bytes + 1
        while left > 0:
            chunk = os.read(descriptor, min(left, MiB))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise UnsafeFileError(f"{path} grew past the {max_bytes:,} bytes expected while it was read")
    return data


def read_tail(path: Path, max_bytes: int) -> bytes:
    """At most the last `max_bytes` of a regular file (b"" if it is missing)."""
    try:
        with _opened_regular(path, os.O_RDONLY) as (descriptor, info):
            return os.pread(descriptor, max_bytes, max(0, info.st_size - max_bytes))
    except FileNotFoundError:
        return b""


def read_from(path: Path, offset: int, max_bytes: int) -> tuple[bytes, int]:
    """At most `max_bytes` of a regular file from byte `offset`, and the file's size (b"", 0 if it is missing):
    for following a file another process appends to."""
    try:
        with _opened_regular(path, os.O_RDONLY) as (descriptor, info):
            return os.pread(descriptor, max_bytes, offset) if offset < info.st_size else b"", info.st_size
    except FileNotFoundError:
        return b"", 0


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one rename; the temporary file gets a fresh unguessable name."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
        os.replace(temporary, path)
    except BaseException:
        _unlink_quietly(temporary)
        raise


@dataclass
class TreeUsage:
    """What a walk of a directory found: bytes allocated, entries, the (st_dev, st_ino) of every entry
    counted (so files reached another way are not counted twice), and why some of it could not be seen."""

    bytes: int = 0
    entries: int = 0
    seen: set[tuple[int, int]] = field(default_factory=set)
    unseen: str = ""


class _Full(Exception):
    """More entries than the walk counts."""


def walk_usage(path: Path, max_entries: int) -> TreeUsage:
    """Bytes on disk (allocated blocks, so sparse and fallocated files count as they cost) and entries
    under `path`, walked without following any link; counting stops past `max_entries`.

    The walk cannot be blinded by the directory's owner (the worker): a directory whose owner took away
    their own read or search right is given it back (u+rwx, on the directory itself, never through a name
    that could be swapped for a link) before it is read. What still cannot be read is said in `unseen`, for
    the caller to treat as over the cap. Directories nested deeper than MAX_WALK_DEPTH are not entered
    (one descriptor is held per level) and are said in `unseen` too. Each file is counted once, however
    many names it has. A file moved from one directory to another while the walk runs may be missed by
    that walk: code that moves files in step with the walks (directories' access times show which were
    just read) might keep them out of most; that race is left open."""
    usage = TreeUsage()
    try:
        root = _open_dir(str(path), None)
    except FileNotFoundError:
        return usage
    except OSError as exc:
        usage.unseen = f"{path.name} cannot be read ({exc.strerror})"
        return usage
    try:
        info = os.fstat(root)
        _walk(root, usage, max_entries, {(info.st_dev, info.st_ino)}, 1)
    except _Full:
        pass
    finally:
        os.close(root)
    return usage


MAX_WALK_DEPTH = 200
OWNER_RIGHTS = stat.S_IRWXU
NEEDED_RIGHTS = stat.S_IRUSR | stat.S_IXUSR  # to list a directory and examine what it holds
O_PATH = getattr(os, "O_PATH", 0)


def _walk(directory: int, usage: TreeUsage, max_entries: int, visited: set[tuple[int, int]], depth: int) -> None:
    with os.scandir(directory) as listing:
        entries = list(listing)
    for entry in entries:
        usage.entries += 1
        if usage.entries > max_entries:
            raise _Full
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed since it was listed
        except OSError as exc:
            usage.unseen = usage.unseen or f"{entry.name!r} cannot be examined ({exc.strerror})"
            continue
        key = (info.st_dev, info.st_ino)
        if key not in usage.seen:
            usage.seen.add(key)
            usage.bytes += info.st_blocks * 512
        if not stat.S_ISDIR(info.st_mode) or key in visited:
            continue
        if depth >= MAX_WALK_DEPTH:
            usage.unseen = usage.unseen or f"directories are nested more than {MAX_WALK_DEPTH} deep"
            continue
        try:
            child = _open_dir(entry.name, directory)
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed or replaced since it was listed; what replaced it is counted by the next walk
        except OSError as exc:
            usage.unseen = usage.unseen or f"the directory {entry.name!r} cannot be read ({exc.strerror})"
            continue
        try:
            visited.add(key)
            _walk(child, usage, max_entries, visited, depth + 1)
        finally:
            os.close(child)


def _open_dir(name: str, parent: int | None) -> int:
    """A descriptor to read the directory `name` (never a link), with its owner's rights given back first
    if the right to read or search it was taken away: it is opened by O_PATH (which needs no right on it),
    fixed through that descriptor, and reopened through it, so what is fixed and read is the directory
    first found."""
    if not O_PATH:  # not Linux: no way to reach a directory without a right on it; read it as it is
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    handle = os.open(name, O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
    try:
        mode = os.fstat(handle).st_mode
        if mode & NEEDED_RIGHTS != NEEDED_RIGHTS:  # a read-only directory (0555) is left as it is
            os.chmod(f"/proc/self/fd/{handle}", stat.S_IMODE(mode) | OWNER_RIGHTS)
        return os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError as exc:  # the directory is held open, so what is missing is /proc
        raise PermissionError(exc.errno, "/proc/self/fd is not available to reach it") from None
    finally:
        os.close(handle)
