"""What the worker process is allowed to see and do.

The worker starts from an allow-list of environment variables, so API keys and tokens held by the server
never reach model-written code through os.environ; and /proc is closed to it (below). Standard library only:
the worker imports this.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "PYTHONPATH")


def worker_environment(home: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    environ = os.environ if environ is None else environ
    env = {name: environ[name] for name in PASSED_THROUGH if name in environ}
    env.setdefault("PATH", os.defpath)
    tmp = home / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONIOENCODING="utf-8", PYTHONDONTWRITEBYTECODE="1")
    return env


# -- keeping the server's secrets out of reach ---------------------------------------------------------------
#
# A process can read the environment and memory of another process of the same user through /proc
# (/proc/<pid>/environ, /proc/<pid>/mem), and the server's environment holds API keys. Two measures close
# that: the server marks itself non-dumpable, which denies those reads to same-user processes that lack
# CAP_SYS_PTRACE; and a worker running as root gives up all its capabilities (and the right to regain them
# through exec) before it runs any user code, so it cannot override the first measure.

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
    """Server side: deny same-user processes (the workers) access to /proc/<server>/environ and mem."""
    libc = _libc()
    return libc is not None and libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


def drop_privileges() -> list[str]:
    """Worker side, before user code: no new privileges ever, and as root, no capabilities at all.

    Returns what could not be done, for the sandbox report; an empty list means all of it held.
    """
    libc = _libc()
    if libc is None:
        return ["capabilities: not Linux"]
    missing = []
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        missing.append("no_new_privs: prctl failed")
    if os.geteuid() != 0:
        return missing
    for capability in range(64):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the last capability this kernel knows
    number = CAPSET_SYSCALL.get(platform.machine())
    if number is None:
        return [*missing, f"capabilities: no capset syscall number for {platform.machine()}"]
    header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable for two 32-bit words: all zero
    if libc.syscall(number, ctypes.byref(header), ctypes.byref(data)) != 0:
        missing.append(f"capabilities: capset failed ({os.strerror(ctypes.get_errno())})")
    return missing
