"""Process controls both sides use: the server makes itself non-dumpable, the worker drops privileges.

Shared with the worker, which drops its privileges before it runs any user code.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import sys
from typing import Any

# -- keeping the server's secrets out of reach ---------------------------------------------------------------
#
# A process can read the environment and memory of another process of the same user through /proc
# (/proc/<pid>/environ, /proc/<pid>/mem), and the server's environment holds API keys. Two measures close
# that: the server marks itself non-dumpable, which denies those reads to same-user processes that lack
# CAP_SYS_PTRACE; and the worker gives up all its capabilities (and the right to regain them through exec)
# before it runs any user code, so it cannot override the first measure.

PR_CAPBSET_DROP = 24
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAPSET_SYSCALL = {"x86_64": 126, "aarch64": 91, "arm64": 91}


def _libc() -> Any | None:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def make_undumpable() -> bool:
    """Deny same-user processes access to this one's /proc/<pid>/environ, mem and cwd: the server holds API
    keys; a worker's environment and directory name its session. (A worker calls it once locked down.)"""
    libc = _libc()
    return libc is not None and libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


def drop_privileges() -> None:
    """No new privileges ever, and no capabilities (as root, or inside the worker's own user namespace)."""
    libc = _libc()
    if libc is None:
        return
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    for capability in range(64):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the last capability this kernel knows
    number = CAPSET_SYSCALL.get(platform.machine())
    if number is not None:
        header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable for two 32-bit words: all zero
        libc.syscall(number, ctypes.byref(header), ctypes.byref(data))
