"""Private user, network and IPC namespaces for the worker, entered by the worker itself.

A new network namespace has no interfaces but a loopback that is down: no address, local or remote, is
reachable, whatever the code does with raw system calls. The same kernel feature that bubblewrap or a
container uses, without a helper binary or root: an unprivileged process may create a user namespace and,
inside it, a network namespace. The user namespace maps the worker's own uid and gid onto themselves, so
files keep their owners. Some distributions forbid unprivileged user namespaces (e.g. Ubuntu 24.04 by
default); then this layer is reported missing and Landlock and seccomp still hold the network shut.

Must run while the process is single-threaded.
"""

from __future__ import annotations

import ctypes
import os

from rlm_mcp.worker.errors import NamespaceError

CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000


def isolate() -> None:
    uid, gid = os.geteuid(), os.getegid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWIPC) != 0:
        number = ctypes.get_errno()
        raise NamespaceError(number, f"unshare(user, net, ipc): {os.strerror(number)}")
    try:
        for path, text in (
            ("/proc/self/uid_map", f"{uid} {uid} 1"),
            ("/proc/self/setgroups", "deny"),
            ("/proc/self/gid_map", f"{gid} {gid} 1"),
        ):
            with open(path, "w") as handle:
                handle.write(text)
    except OSError as exc:
        raise NamespaceError(exc.errno, f"mapping ids in the user namespace: {exc.strerror}") from None
