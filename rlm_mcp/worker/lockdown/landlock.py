"""Landlock: a file-system allow-list and a TCP ban that an unprivileged process imposes on itself.

Landlock (Linux 5.13+) needs no root, no helper binary and no namespace support; once `restrict_self` has
run, the process and every thread it starts later can only open paths beneath the directories given here,
and nothing it does can lift that. Each ABI version adds rights, so the ruleset handles exactly the rights
this kernel knows: a right the kernel cannot handle would make the whole ruleset fail.

Called by the worker while it is still single-threaded (Landlock applies to the calling thread and its
future threads).
"""

from __future__ import annotations

import ctypes
import os
import stat
import struct
from dataclasses import dataclass

from rlm_mcp.worker.errors import LandlockError

# Syscall numbers are the same on every architecture that has Landlock (asm-generic numbering).
CREATE_RULESET, ADD_RULE, RESTRICT_SELF = 444, 445, 446
CREATE_RULESET_VERSION = 1 << 0
RULE_PATH_BENEATH, RULE_NET_PORT = 1, 2

# File-system rights, by the ABI that introduced them.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
FS_RIGHTS_LATEST = (1 << 16) - 1  # ABI 5 and later
FILE_ONLY_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # what a rule on a file may grant

READ_ONLY = EXECUTE | READ_FILE | READ_DIR
READ_WRITE = FS_RIGHTS_LATEST & ~(MAKE_CHAR | MAKE_BLOCK)

NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1  # ABI 6


@dataclass(frozen=True)
class Enforced:
    abi: int
    filesystem: bool
    tcp: bool
    scopes: bool  # no abstract unix sockets or signals outside the sandbox


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI, or 0 if it has none (too old, or disabled at boot)."""
    try:
        version = _libc().syscall(CREATE_RULESET, None, ctypes.c_size_t(0), CREATE_RULESET_VERSION)
    except (OSError, AttributeError):
        return 0
    return max(version, 0)


def restrict(read_only: list[str], read_write: list[str], *, deny_tcp: bool = True) -> Enforced:
    """Allow reads beneath `read_only`, reads and writes beneath `read_write`, and nothing else, for good.

    Paths that do not exist are skipped. Raises LandlockError if the kernel lacks Landlock or refuses.
    """
    libc = _libc()
    abi = abi_version()
    if abi < 1:
        raise LandlockError("the kernel has no Landlock (Linux 5.13+ with landlock in the LSM list)")
    handled_fs = FS_RIGHTS_BY_ABI.get(abi, FS_RIGHTS_LATEST)
    handled_net = NET_BIND_TCP | NET_CONNECT_TCP if deny_tcp and abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    if abi >= 6:
        attr = struct.pack("=QQQ", handled_fs, handled_net, scoped)
    elif abi >= 4:
        attr = struct.pack("=QQ", handled_fs, handled_net)
    else:
        attr = struct.pack("=Q", handled_fs)
    buffer = ctypes.create_string_buffer(attr, len(attr))
    ruleset = libc.syscall(CREATE_RULESET, buffer, ctypes.c_size_t(len(attr)), 0)
    if ruleset < 0:
        raise LandlockError(ctypes.get_errno(), f"landlock_create_ruleset: {os.strerror(ctypes.get_errno())}")
    try:
        for paths, rights in ((read_only, READ_ONLY), (read_write, READ_WRITE)):
            for path in paths:
                _allow(libc, ruleset, path, rights & handled_fs)
        if libc.syscall(RESTRICT_SELF, ruleset, 0) != 0:
            raise LandlockError(ctypes.get_errno(), f"landlock_restrict_self: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(ruleset)
    return Enforced(abi=abi, filesystem=True, tcp=bool(handled_net), scopes=bool(scoped))


def _allow(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # nothing there to allow
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= FILE_ONLY_RIGHTS
        rule = ctypes.create_string_buffer(struct.pack("=Qi", rights, fd), 12)  # packed struct
        if libc.syscall(ADD_RULE, ruleset, RULE_PATH_BENEATH, rule, 0) != 0:
            raise LandlockError(ctypes.get_errno(), f"landlock_add_rule({path}): {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(fd)
