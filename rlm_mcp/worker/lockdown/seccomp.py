"""A seccomp filter for the worker: no new processes, no sockets, no shared memory, no kernel escape hatches.

Threads still work. Written as a classic BPF program here rather than through libseccomp: the filter is
about seventy instructions, and building it in Python keeps the worker free of a C library that may be missing.

What it denies (each with an errno, so the code sees an ordinary OSError, never a killed process):
- fork, vfork, and clone without CLONE_THREAD (threads are clone with CLONE_THREAD, so they pass) or
  without CLONE_FILES (a thread keeps the process's one table of descriptors, which the server examines for
  the disk cap: host/held.py); clone3 answers ENOSYS, since its flags sit in memory a filter cannot read,
  and libc then falls back to clone; execve and execveat.
- socket() of every family, AF_UNIX included, so nothing can reach the network, a local daemon, or the
  Docker socket; socketpair() stays allowed (asyncio needs it and it connects to nothing).
- ptrace, process_vm_readv/writev, mount and namespace calls, bpf, perf_event_open, keyrings, userfaultfd,
  io_uring, module loading, kexec, open_by_handle_at.
- shared anonymous memory, because it escapes the memory cap: RLIMIT_DATA counts private writable
  mappings only, and shared anonymous memory is shmem, which no rlimit counts (a cgroup's memory.max
  would, where the machine delegates one: see cgroups.py). mmap with MAP_ANONYMOUS and MAP_SHARED (or
  MAP_SHARED_VALIDATE, which has the MAP_SHARED bit), memfd_create and memfd_secret (memory-backed files
  to mmap), and SysV shmget and shmat answer ENOMEM, as an allocation past the cap does: that is what code
  that handles a failed allocation expects (EPERM would read as a file permission problem).
  Refused at every size, not above a threshold: a per-mapping threshold bounds nothing, since a process
  may make 65,530 mappings (vm.max_map_count); and nothing the worker runs needs shared anonymous memory,
  which exists to share pages with other processes, and the worker may start none. Private anonymous
  memory (malloc, thread stacks, `mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE)`) and mappings of files (bound
  by the file-size limit and the filesystem layer) pass. Only the low 32 bits of mmap's flags are read:
  a BPF load is 32 bits wide, and every bit the kernel consults for "anonymous" and "shared" (MAP_TYPE
  0x0f, MAP_ANONYMOUS 0x20) lies in them, so the high word cannot change the verdict. /dev/zero mapped
  shared is the same shmem: the filesystem layer does not let the worker open /dev/zero at all.
- any change to the CPU time limit (setrlimit, and prlimit64 with a new value, for RLIMIT_CPU): the host
  renews it for each request from outside (limits.py says why); reading it stays allowed.
- fallocate with FALLOC_FL_KEEP_SIZE (EOPNOTSUPP, as a filesystem without it answers): blocks allocated
  past a file's end escape RLIMIT_FSIZE, which must bound every file the server cannot measure (an
  unlinked file left mapped, host/held.py). Plain fallocate and posix_fallocate pass.
Any other architecture than the native one (e.g. 32-bit syscalls on x86_64) kills the process.

Installed by the worker while single-threaded (threads started later inherit it), after no_new_privs.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

from rlm_mcp.worker.errors import SeccompError

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
RET_ALLOW = 0x7FFF0000
RET_ERRNO = 0x00050000
RET_KILL_PROCESS = 0x80000000
CLONE_THREAD = 0x00010000
CLONE_FILES = 0x00000400
RLIMIT_CPU = 0  # the same on every Linux architecture
FALLOC_FL_KEEP_SIZE = 0x01
X32_SYSCALL_BIT = 0x40000000

# BPF opcodes
LD_W_ABS = 0x20
JEQ_K = 0x15
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0 = 0, 4, 16
ARG_BYTES = 8
# mmap(addr, length, prot, flags, fd, offset): flags is argument 3. Both supported architectures are
# little-endian, so an argument's low 32 bits are the first word of its 64-bit slot.
MMAP_FLAGS_ARG = 3
MAP_SHARED = 0x01  # also set in MAP_SHARED_VALIDATE (0x03)
MAP_ANONYMOUS = 0x20  # the same value on x86_64 and aarch64 (asm-generic)


class Syscalls:
    """The numbers that differ by architecture; names absent on an architecture are simply left out."""

    def __init__(self, audit_arch: int, numbers: dict[str, int]) -> None:
        self.audit_arch = audit_arch
        self.numbers = numbers


DENIED_PROCESS = ("fork", "vfork", "execve", "execveat")
DENIED_NETWORK = ("socket",)
DENIED_MEMORY = ("memfd_create", "memfd_secret", "shmget", "shmat")  # shmem the rlimits do not count
DENIED_ESCAPES = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "io_uring_setup",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "open_by_handle_at",
)

TABLES = {
    "x86_64": Syscalls(
        0xC000003E,
        {
            "fork": 57,
            "vfork": 58,
            "execve": 59,
            "execveat": 322,
            "clone": 56,
            "clone3": 435,
            "socket": 41,
            "ptrace": 101,
            "process_vm_readv": 310,
            "process_vm_writev": 311,
            "mount": 165,
            "umount2": 166,
            "pivot_root": 155,
            "chroot": 161,
            "unshare": 272,
            "setns": 308,
            "bpf": 321,
            "perf_event_open": 298,
            "keyctl": 250,
            "add_key": 248,
            "request_key": 249,
            "userfaultfd": 323,
            "io_uring_setup": 425,
            "init_module": 175,
            "finit_module": 313,
            "delete_module": 176,
            "kexec_load": 246,
            "open_by_handle_at": 304,
            "mmap": 9,
            "memfd_create": 319,
            "memfd_secret": 447,
            "shmget": 29,
            "shmat": 30,
            "setrlimit": 160,
            "prlimit64": 302,
            "fallocate": 285,
        },
    ),
    "aarch64": Syscalls(
        0xC00000B7,
        {
            "execve": 221,
            "execveat": 281,
            "clone": 220,
            "clone3": 435,
            "socket": 198,
            "ptrace": 117,
            "process_vm_readv": 270,
            "process_vm_writev": 271,
            "mount": 40,
            "umount2": 39,
            "pivot_root": 41,
            "chroot": 51,
            "unshare": 97,
            "setns": 268,
            "bpf": 280,
            "perf_event_open": 241,
            "keyctl": 219,
            "add_key": 217,
            "request_key": 218,
            "userfaultfd": 282,
            "io_uring_setup": 425,
            "init_module": 105,
            "finit_module": 273,
            "delete_module": 106,
            "kexec_load": 104,
            "open_by_handle_at": 265,
            "mmap": 222,
            "memfd_create": 279,
            "memfd_secret": 447,
            "shmget": 194,
            "shmat": 196,
            "setrlimit": 164,
            "prlimit64": 261,
            "fallocate": 47,
        },
    ),
}
TABLES["arm64"] = TABLES["aarch64"]


def _instruction(code: int, k: int, jump_true: int = 0, jump_false: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jump_true, jump_false, k)


def _arg_low_word(index: int) -> int:
    """Offset of the low 32 bits of system call argument `index` in struct seccomp_data (little-endian)."""
    return OFFSET_ARG0 + ARG_BYTES * index


def _arg_high_word(index: int) -> int:
    return _arg_low_word(index) + 4


def _only_for(number: int | None, body: list[bytes]) -> list[bytes]:
    """`body` (each of whose paths ends in a return) for system call `number`; any other call skips it."""
    if number is None:
        return []
    return [_instruction(JEQ_K, number, 0, len(body)), *body]


def _limit_rules(table: Syscalls) -> list[bytes]:
    """No change to RLIMIT_CPU (reading it, with prlimit64's new value NULL, passes); no KEEP_SIZE fallocate."""
    allow, refuse = _instruction(RET_K, RET_ALLOW), _instruction(RET_K, RET_ERRNO | errno.EPERM)
    setrlimit = [_instruction(LD_W_ABS, _arg_low_word(0)), _instruction(JEQ_K, RLIMIT_CPU, 0, 1), refuse, allow]
    prlimit = [
        _instruction(LD_W_ABS, _arg_low_word(1)),  # the resource
        _instruction(JEQ_K, RLIMIT_CPU, 0, 5),
        _instruction(LD_W_ABS, _arg_low_word(2)),  # the new value's address: NULL only reads
        _instruction(JEQ_K, 0, 0, 2),
        _instruction(LD_W_ABS, _arg_high_word(2)),
        _instruction(JEQ_K, 0, 1, 0),
        refuse,
        allow,
    ]
    fallocate = [
        _instruction(LD_W_ABS, _arg_low_word(1)),  # the mode
        _instruction(JSET_K, FALLOC_FL_KEEP_SIZE, 0, 1),
        _instruction(RET_K, RET_ERRNO | errno.EOPNOTSUPP),
        allow,
    ]
    numbers = table.numbers
    return [
        *_only_for(numbers.get("setrlimit"), setrlimit),
        *_only_for(numbers.get("prlimit64"), prlimit),
        *_only_for(numbers.get("fallocate"), fallocate),
    ]


def build_program(table: Syscalls) -> list[bytes]:
    def deny(name: str, code: int) -> list[bytes]:
        number = table.numbers.get(name)
        if number is None:
            return []
        return [_instruction(JEQ_K, number, 0, 1), _instruction(RET_K, RET_ERRNO | code)]

    program = [
        _instruction(LD_W_ABS, OFFSET_ARCH),
        _instruction(JEQ_K, table.audit_arch, 1, 0),
        _instruction(RET_K, RET_KILL_PROCESS),
        _instruction(LD_W_ABS, OFFSET_NR),
        _instruction(JGE_K, X32_SYSCALL_BIT, 0, 1),  # x32 ABI calls: a second syscall table, not filtered here
        _instruction(RET_K, RET_ERRNO | errno.EPERM),
    ]
    for name in DENIED_PROCESS + DENIED_ESCAPES:
        program += deny(name, errno.EPERM)
    for name in DENIED_NETWORK:
        program += deny(name, errno.EACCES)
    for name in DENIED_MEMORY:
        program += deny(name, errno.ENOMEM)
    program += deny("clone3", errno.ENOSYS)
    program += [
        _instruction(JEQ_K, table.numbers["mmap"], 0, 5),
        _instruction(LD_W_ABS, _arg_low_word(MMAP_FLAGS_ARG)),
        _instruction(JSET_K, MAP_ANONYMOUS, 0, 2),  # a file mapping: allowed
        _instruction(JSET_K, MAP_SHARED, 0, 1),  # private anonymous memory: allowed, RLIMIT_DATA counts it
        _instruction(RET_K, RET_ERRNO | errno.ENOMEM),
        _instruction(RET_K, RET_ALLOW),
    ]
    program += _limit_rules(table)
    program += [
        _instruction(JEQ_K, table.numbers["clone"], 0, 5),
        _instruction(LD_W_ABS, _arg_low_word(0)),  # clone's flags, low 32 bits
        _instruction(JSET_K, CLONE_THREAD, 0, 2),
        _instruction(JSET_K, CLONE_FILES, 0, 1),
        _instruction(RET_K, RET_ALLOW),
        _instruction(RET_K, RET_ERRNO | errno.EPERM),
        _instruction(RET_K, RET_ALLOW),
    ]
    return program


def install() -> None:
    """Install the filter on the calling thread (and the threads it starts later). Needs no_new_privs."""
    table = TABLES.get(platform.machine())
    if table is None:
        raise SeccompError(f"no system call table for {platform.machine()} (x86_64 and aarch64 are supported)")
    program = build_program(table)
    code = b"".join(program)
    filters = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(program), ctypes.addressof(filters))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        number = ctypes.get_errno()
        raise SeccompError(number, f"prctl(PR_SET_SECCOMP): {os.strerror(number)}")
