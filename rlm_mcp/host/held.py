"""What a worker holds on disk without a name: files it keeps open or mapped after unlinking them.

A walk of the scratch directory sees only files with a name there. A file made with O_TMPFILE, or unlinked
while it is still open or mapped, keeps its blocks until the last descriptor and mapping go, and no walk
finds it. The server finds those through the worker's process instead, and adds them to the disk cap:

- descriptors: each one the worker holds is examined as the open file itself, never through a name the
  worker could have planted. As root the server stats /proc/<pid>/fd/<n> (a magic link to the open file);
  otherwise the worker is not dumpable and its /proc entries are closed to the server's user, so the
  server duplicates each descriptor with pidfd_getfd(2) and fstats the copy. That needs ptrace rights over
  the worker, which a non-root server has when the worker's memory belongs to a user namespace the server's
  user owns: the worker re-executes itself in one (rlm_mcp/worker/inspectable.py). Threads share
  one descriptor table (seccomp refuses a thread that would not), and with seccomp active the worker has
  no children; without it, its descendants are examined too.
- mappings: /proc/<pid>/maps names every file mapped, and marks one unlinked "(deleted)". As root its
  size comes from /proc/<pid>/map_files (which needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE). Without
  root it cannot be measured, so it is charged the most a file of the worker's can hold: RLIMIT_FSIZE, which
  caps every way the worker can grow a file (seccomp refuses fallocate's KEEP_SIZE, the one way around it).
  Python's own mmap keeps a descriptor for what it maps, so ordinary code is measured, not charged.

Only regular files with no name left (st_nlink 0) on the scratch directory's filesystem count: the
worker's named files are the walk's, and the user's files it reads elsewhere are not its to pay for.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

PIDFD_GETFD = 438  # the same number on x86_64 and aarch64 (asm-generic)
MAX_DESCRIPTORS = 1 << 20  # far above the worker's RLIMIT_NOFILE, which it cannot raise
MAPS_MAX_BYTES = 32 << 20  # 65,530 mappings (vm.max_map_count) of long paths fit
DELETED = b" (deleted)"  # how /proc/<pid>/maps marks a mapped file that has no name left


@dataclass
class Held:
    """Bytes held without a name (measured, or charged where they cannot be), and why some could not be seen."""

    bytes: int = 0
    charged: int = 0  # mapped files that could not be measured
    unseen: str = ""
    descriptors: list[int] = field(default_factory=list)  # the worker's descriptors of those files, to name them


class _Unseen(OSError):
    pass


def _libc() -> ctypes.CDLL | None:
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    libc.syscall.restype = ctypes.c_long
    return libc


_LIBC = _libc()


def _fd_table_size(pid: int) -> int:
    """How many descriptor slots the process has (FDSize in /proc/<pid>/status, which any user may read)."""
    with open(f"/proc/{pid}/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"FDSize:"):
                return int(line.split()[1])
    raise _Unseen(errno.ENOENT, "no FDSize in its status")


def _open_files_by_pidfd(pid: int) -> Iterator[tuple[int, os.stat_result]]:
    """The open files behind the process's descriptors (number, stat), through copies of them (pidfd_getfd,
    which needs ptrace rights over the process; its /proc/<pid>/fd may stay closed)."""
    if _LIBC is None:
        raise _Unseen(errno.ENOSYS, "pidfd_getfd is not available")
    size = min(_fd_table_size(pid), MAX_DESCRIPTORS)
    pidfd = os.pidfd_open(pid)
    try:
        for number in range(size):
            copy = _LIBC.syscall(PIDFD_GETFD, pidfd, number, 0)
            if copy < 0:
                code = ctypes.get_errno()
                if code == errno.EBADF:
                    continue  # a free slot
                if code == errno.ESRCH:
                    raise ProcessLookupError(code, "the process has exited")
                raise _Unseen(code, f"pidfd_getfd: {os.strerror(code)}")
            try:
                yield number, os.fstat(copy)
            finally:
                os.close(copy)
    finally:
        os.close(pidfd)


def _open_files(pid: int) -> Iterator[tuple[int, os.stat_result]]:
    """The open files behind the process's descriptors, with their numbers: through /proc where the server
    may read it (each magic link there leads to the open file itself), else through copies of them."""
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except PermissionError:
        yield from _open_files_by_pidfd(pid)
        return
    for name in names:
        try:
            yield int(name), os.stat(f"/proc/{pid}/fd/{name}")
        except FileNotFoundError:
            continue  # closed since it was listed


@dataclass
class _Mapping:
    span: str  # start-end, as /proc/<pid>/map_files names it
    inode: int
    path: str


def _deleted_mappings(pid: int, under: str) -> Iterator[_Mapping]:
    """Mappings of unlinked files that were under the directory `under` (as /proc/<pid>/maps names them)."""
    with open(f"/proc/{pid}/maps", "rb") as handle:
        text = handle.read(MAPS_MAX_BYTES + 1)
    if len(text) > MAPS_MAX_BYTES:
        raise _Unseen(errno.E2BIG, "its list of mappings is too long to read")
    if DELETED not in text:
        return  # the usual case, after every cell: nothing to parse
    prefix = under.rstrip("/") + "/"
    for line in text.decode("utf-8", "replace").splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].endswith(" (deleted)") or not fields[5].startswith(prefix):
            continue
        start, _, end = fields[0].partition("-")
        yield _Mapping(f"{int(start, 16):x}-{int(end, 16):x}", int(fields[4]), fields[5])


@dataclass
class _Count:
    device: int
    seen: set[tuple[int, int]]
    held: Held = field(default_factory=Held)

    def add(self, info: os.stat_result, descriptor: int | None = None) -> None:
        key = (info.st_dev, info.st_ino)
        if stat.S_ISREG(info.st_mode) and info.st_nlink == 0 and info.st_dev == self.device and key not in self.seen:
            self.seen.add(key)
            self.held.bytes += info.st_blocks * 512
            if descriptor is not None:
                self.held.descriptors.append(descriptor)


def held_usage(
    pids: Iterable[int], scratch: str, device: int, seen: set[tuple[int, int]], unmeasured_bytes: int
) -> Held:
    """What the processes `pids` hold without a name under `scratch` (on filesystem `device`), beyond the
    files in `seen` (which it extends); a mapped file that cannot be measured is charged `unmeasured_bytes`."""
    count = _Count(device, seen)
    for pid in pids:
        try:
            for descriptor, info in _open_files(pid):
                count.add(info, descriptor)
            _count_mappings(pid, scratch, count, unmeasured_bytes)
        except (FileNotFoundError, ProcessLookupError):
            continue  # the process is gone: so is what it held
        except OSError as exc:
            count.held.unseen = f"the worker's open files cannot be examined ({exc.strerror or exc})"
    return count.held


def _count_mappings(pid: int, scratch: str, count: _Count, unmeasured_bytes: int) -> None:
    inodes = {inode for device, inode in count.seen if device == count.device}
    for mapping in _deleted_mappings(pid, scratch):
        if mapping.inode in inodes:
            continue  # also open, or mapped twice: counted already
        inodes.add(mapping.inode)
        try:
            info = os.stat(f"/proc/{pid}/map_files/{mapping.span}")
        except PermissionError:  # only CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE may follow these links
            count.held.bytes += unmeasured_bytes
            count.held.charged += 1
            continue
        except FileNotFoundError:
            continue  # unmapped since
        count.add(info)


def inspectable(pid: int) -> str:
    """Why the server cannot examine what process `pid` holds ("" if it can)."""
    if sys.platform != "linux":
        return "not Linux"
    try:
        with contextlib.closing(_open_files(pid)) as files:
            next(files, None)
        with open(f"/proc/{pid}/maps", "rb") as handle:
            handle.read(1)
    except OSError as exc:
        return str(exc.strerror or exc)
    return ""
