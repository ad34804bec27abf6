"""Clear words for what the sandbox refuses.

The kernel enforces the sandbox (seccomp, Landlock, namespaces) and answers a refused call with a bare
errno, which tells a model nothing about why or what to do instead. An audit hook stops the common Python
routes to a process or a socket first, with a message that says; code that goes around Python (ctypes,
raw system calls) still meets the kernel's refusal.

Shared anonymous memory (refused by the seccomp filter because no rlimit counts it) needs more than the
hook: its audit event, `mmap.__new__`, carries (fileno, length, access, offset) but not the flags, and
`mmap.mmap(-1, n)` is shared only because MAP_SHARED is the default flag, while
`mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE)` must keep working. So `mmap.mmap` is replaced by a subclass
that looks at the flags before the kernel does, and `os.memfd_create` (which has no audit event) by a
function that refuses; both raise the same PermissionError. The hook still covers what its arguments do
show (access=ACCESS_READ or ACCESS_WRITE on fileno -1 is shared), even on the original class. Whatever
goes around these (ctypes, shmget, the original class's flags) gets ENOMEM from the kernel.
"""

from __future__ import annotations

import mmap
import os
import socket
import sys
from typing import Any

PROCESS_EVENTS = frozenset(
    {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen", "pty.spawn"}
)
NETWORK_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"})
LOCAL_FAMILIES = frozenset({socket.AF_UNIX})  # socketpair() (asyncio) creates these and stays allowed
SHARED_ACCESS = frozenset({mmap.ACCESS_READ, mmap.ACCESS_WRITE})  # both map with MAP_SHARED
MMAP_PARAMETERS = ("fileno", "length", "flags", "prot", "access", "offset")  # mmap.mmap's, on Unix

NO_PROCESSES = (
    "starting processes is disabled in the rlm-mcp sandbox: do the work in Python in this REPL "
    "(threads work; llm_query reaches the sub-model)"
)
NO_NETWORK = (
    "network access is disabled in the rlm-mcp sandbox: load inputs with the load_context tool "
    "and reach the sub-model with llm_query"
)
NO_SHARED_MEMORY = (
    "shared anonymous memory is disabled in the rlm-mcp sandbox because it escapes the memory cap: "
    "use a bytearray, mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE), or mmap a file in the working directory"
)


def shared_anonymous(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether mmap.mmap(*args, **kwargs) asks for shared anonymous memory (as the C code would read them)."""
    given = dict(zip(MMAP_PARAMETERS, args, strict=False)) | kwargs
    if given.get("fileno") != -1:
        return False
    access = given.get("access", mmap.ACCESS_DEFAULT)
    if access in SHARED_ACCESS:
        return True
    flags = given.get("flags", mmap.MAP_SHARED)
    return access != mmap.ACCESS_COPY and isinstance(flags, int) and bool(flags & mmap.MAP_SHARED)


class GuardedMmap(mmap.mmap):
    """mmap.mmap, except that shared anonymous memory is refused with words instead of a bare ENOMEM."""

    __slots__ = ()

    def __new__(cls, *args: Any, **kwargs: Any) -> GuardedMmap:
        if shared_anonymous(args, kwargs):
            raise PermissionError(NO_SHARED_MEMORY)
        return super().__new__(cls, *args, **kwargs)


GuardedMmap.__name__ = GuardedMmap.__qualname__ = "mmap"  # so reprs and errors still say mmap.mmap
GuardedMmap.__module__ = "mmap"


def _refused_memfd_create(name: str, flags: int = 0) -> int:
    """os.memfd_create in the sandbox: a memory-backed file, which the memory cap does not count."""
    raise PermissionError(NO_SHARED_MEMORY)


def install(*, processes: bool, network: bool, shared_memory: bool | None = None) -> None:
    """Refuse what the kernel refuses at the Python level too, with a message that explains.

    `shared_memory` defaults to `processes`: the same seccomp filter refuses both, so where one holds the
    other does (and where the filter is missing, a Python-level refusal alone would only pretend).
    """
    shared_memory = processes if shared_memory is None else shared_memory
    if shared_memory:
        mmap.mmap = GuardedMmap  # type: ignore[misc]
        if hasattr(os, "memfd_create"):
            os.memfd_create = _refused_memfd_create

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if processes and event in PROCESS_EVENTS:
            raise PermissionError(NO_PROCESSES)
        if network:
            if event in NETWORK_EVENTS:
                raise PermissionError(NO_NETWORK)
            if event == "socket.__new__" and len(args) > 1 and args[1] not in LOCAL_FAMILIES and args[1] != -1:
                raise PermissionError(NO_NETWORK)
        if shared_memory and event == "mmap.__new__" and args[0] == -1 and args[2] in SHARED_ACCESS:
            raise PermissionError(NO_SHARED_MEMORY)

    sys.addaudithook(hook)
