"""The worker's first step when the server is not root: re-execute itself inside a user namespace of its own.

Why: the server counts the files the worker holds open without a name against the disk cap
(rlm_mcp/host/held.py), so it must be able to examine the worker's descriptors. The worker makes itself
non-dumpable (its environment and directory name its session), and then only a process with
CAP_SYS_PTRACE in the user namespace its memory belongs to may do so. That namespace is the one the
interpreter was executed in. Executed in a namespace the worker creates, owned by the server's user, the
server holds every capability there and may examine it. So may the user's other processes, as under
bubblewrap (whose namespace is the user's too; this step is for workers without it): they may then read
the worker's descriptors, mappings and directory, and its memory through process_vm_readv (a red team read a
marker that way), though not its environment or /proc/<pid>/mem (those files stay root's, as the worker is
non-dumpable). That costs nothing: the worker holds no secret (its environment is an allow-list, the keys
stay in the server), and a process of the user already holds more than the sandboxed worker does (it may
read the session's directory itself). The worker gains nothing: its capabilities
stay inside its own namespaces, and it cannot examine another worker (the server's user in the initial
namespace can; a worker is not there).

Nothing changes for the code in the worker: the namespace maps the user's own uid and gid onto themselves,
as the namespaces layer does (which then nests its own namespace inside this one). Where unprivileged user
namespaces are refused, the worker goes on without; the server then says its disk cap cannot see unnamed
files. Runs before anything else, while the process is single-threaded and has opened nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000


def reexec(program: str) -> None:
    """Enter a new user namespace and execute this interpreter again on `program` (with the same arguments);
    returns only if the namespace cannot be had."""
    if sys.platform != "linux":
        return
    uid, gid = os.geteuid(), os.getegid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER) != 0:
        return
    try:
        for path, text in (
            ("/proc/self/uid_map", f"{uid} {uid} 1"),
            ("/proc/self/setgroups", "deny"),
            ("/proc/self/gid_map", f"{gid} {gid} 1"),
        ):
            with open(path, "w") as handle:
                handle.write(text)
    except OSError:
        return  # unmapped: the server cannot examine it, and the namespaces layer will say what failed
    os.execv(sys.executable, [sys.executable, "-I", "-c", program, *sys.argv[1:]])
