"""A cgroup v2 of its own for each REPL worker, where the machine delegates a cgroup subtree to the server.

Why: the worker caps its memory with RLIMIT_DATA, which counts private writable mappings only. Shared
anonymous memory, memfd files and SysV segments are shmem and escape it (the seccomp filter refuses
them for that reason). A cgroup's memory.max counts every page charged to the worker, shmem included, and
pids.max caps its threads; so where a cgroup can be had without privileges, it is the better cap. Where
not (cgroup v1, or cgroup v2 without delegation), nothing here is used and the seccomp filter stands.

Detection (`cgroup_support`) only reads files; it never creates, writes or changes a cgroup. Delegation
means: cgroup2 mounted at /sys/fs/cgroup (no v1 hierarchy alongside), the server's own cgroup writable by
the server, and the memory and pids controllers available to it.

The "no internal processes" rule decides the layout. A non-root cgroup with processes of its own cannot
enable memory in its cgroup.subtree_control (the kernel answers EBUSY), and a child's controllers are its
parent's subtree_control; so while the server sits in its delegated cgroup S, no child of S, however
prepared, can have memory.max. The server must first leave S for a leaf of its own. Two layouts count:

  prepared   the server already runs in a leaf named `rlm-mcp-server` whose parent P has memory and
             pids in cgroup.subtree_control and is writable: workers go in P, beside the server's leaf.
             Nothing is written until a worker's cgroup is made.
  delegated  S qualifies and holds the server alone (its cgroup.procs lists no other process):
             `CgroupSupport.prepare()` moves the server into S/rlm-mcp-server and writes "+memory +pids"
             to S/cgroup.subtree_control (the handshake systemd documents for Delegate=yes), after which
             workers go in S. If S holds any other process it is not touched: not delegated.

Anything else is reported as not delegated, with a one-line reason. Every path is a parameter, so the
whole module can be exercised against a directory tree of regular files. Standard library only.

The worker runs as the server's user, so file permissions alone would let it raise its own memory.max or
write its pid into another cgroup: the filesystem layer (Landlock, and bubblewrap's read-only /) is what
keeps it out of /sys/fs/cgroup, as it keeps it out of everything else.
"""

from __future__ import annotations

import errno
import itertools
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass

from rlm_mcp.units import MiB

CGROUP_ROOT = "/sys/fs/cgroup"
PROC_SELF_CGROUP = "/proc/self/cgroup"
SERVER_LEAF = "rlm-mcp-server"
WORKER_PREFIX = "rlm-mcp-worker-"
NEEDED = ("memory", "pids")
DEFAULT_PIDS_MAX = 512  # threads count as pids; llm_query_batched and thread pools stay far below
# memory.max sits this far above RLIMIT_DATA, which stays the cap code usually meets (a MemoryError the
# worker survives); the cgroup counts resident pages the rlimit does not (interpreter, page tables, page
# cache, shmem), and hitting memory.max means the OOM killer, not an exception.
MEMORY_HEADROOM_BYTES = 512 * MiB
REMOVE_TIMEOUT_S = 2.0

_names = itertools.count(1)


@dataclass(frozen=True)
class CgroupSupport:
    """Whether workers can have cgroups of their own here, and where.

    `reason`: why not (one line) when not delegated, else where the workers' cgroups go. `parent`: the
    cgroup that holds them. `server_leaf`: where `prepare()` must first move the server ("" if it is
    there already).
    """

    delegated: bool
    reason: str
    parent: str = ""
    server_leaf: str = ""

    def prepare(self, pid: int | None = None) -> str:
        """Make `parent` ready for workers' cgroups and return it; call once, before any worker starts.

        In the "delegated" layout this moves the server (`pid`, default this process) into its leaf and
        enables memory and pids for the parent's children; in the "prepared" layout it writes nothing.
        Raises OSError if the kernel refuses (the caller then goes on without cgroups).
        """
        if not self.delegated:
            raise OSError(errno.ENOTSUP, f"cgroup v2 is not delegated here: {self.reason}")
        if self.server_leaf:
            os.makedirs(self.server_leaf, exist_ok=True)
            _write(os.path.join(self.server_leaf, "cgroup.procs"), str(os.getpid() if pid is None else pid))
            _write(os.path.join(self.parent, "cgroup.subtree_control"), " ".join(f"+{name}" for name in NEEDED))
        return self.parent


def cgroup_support(root: str = CGROUP_ROOT, proc_self_cgroup: str = PROC_SELF_CGROUP) -> CgroupSupport:
    """Find out, reading only, whether this process can give each worker a cgroup v2 of its own."""
    if sys.platform != "linux":
        return CgroupSupport(False, "cgroups need Linux")
    try:
        with open(proc_self_cgroup) as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        return CgroupSupport(False, f"cannot read {proc_self_cgroup}: {exc.strerror}")
    if any(not line.startswith("0::") for line in lines):
        return CgroupSupport(False, "cgroup v1 (owned by the host system)")
    if not lines:
        return CgroupSupport(False, "no cgroup v2 hierarchy")
    if not os.path.isfile(os.path.join(root, "cgroup.controllers")):
        return CgroupSupport(False, f"cgroup v2 is not mounted at {root}")
    own = lines[0][3:]
    server = os.path.normpath(os.path.join(root, own.lstrip("/")))
    if not os.path.isdir(server):
        return CgroupSupport(False, f"the server's cgroup {own} is not under {root} (another cgroup namespace?)")

    parent = os.path.dirname(server)
    if os.path.basename(server) == SERVER_LEAF:
        problem = _problem(parent, "cgroup.subtree_control")
        if not problem:
            return CgroupSupport(True, f"workers' cgroups under {parent}", parent=parent)
        return CgroupSupport(False, problem)

    problem = _problem(server, "cgroup.controllers")
    if problem:
        return CgroupSupport(False, problem)
    others = _read(os.path.join(server, "cgroup.procs")).split()
    if others != [str(os.getpid())]:
        return CgroupSupport(
            False,
            f"the server's cgroup {server} holds other processes too; cgroup v2 gives no memory controller to "
            f"the children of a cgroup with processes (start the server alone in it, or in {SERVER_LEAF}/)",
        )
    return CgroupSupport(
        True,
        f"workers' cgroups under {server} (the server moves to {SERVER_LEAF}/)",
        parent=server,
        server_leaf=os.path.join(server, SERVER_LEAF),
    )


def _problem(cgroup: str, controllers_file: str) -> str:
    """Why `cgroup` cannot hold workers' cgroups ("" if it can): controllers missing, or not writable."""
    available = _read(os.path.join(cgroup, controllers_file)).split()
    missing = [name for name in NEEDED if name not in available]
    if missing:
        return f"{' and '.join(missing)} not in {os.path.join(cgroup, controllers_file)} (not delegated)"
    for path in (cgroup, *(os.path.join(cgroup, name) for name in ("cgroup.procs", "cgroup.subtree_control"))):
        if not os.access(path, os.W_OK):
            return f"{path} is not writable by this user (not delegated)"
    return ""


class WorkerCgroup:
    """One worker's cgroup, PARENT/rlm-mcp-worker-NAME: memory.max, memory.swap.max = 0, pids.max.

    memory.max counts what RLIMIT_DATA misses (shared memory, memfd, the worker's tmpfs files); the kernel
    OOM-kills inside the cgroup when it is exceeded. Make one per worker start, add the worker's pids, and
    remove it once the worker is dead.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    @classmethod
    def create(
        cls, parent: str, *, memory_bytes: int, pids_max: int = DEFAULT_PIDS_MAX, name: str | None = None
    ) -> WorkerCgroup:
        """Make the cgroup (or reuse a leftover of that name) and set its limits. Raises OSError.

        `memory_bytes` is the worker's RLIMIT_DATA (policy.memory_bytes); memory.max gets
        MEMORY_HEADROOM_BYTES more. The default name is this process's pid and a counter: cgroup paths
        are readable by every local process (/proc/<pid>/cgroup), so no session handle goes in one.
        """
        path = os.path.join(parent, WORKER_PREFIX + (name or f"{os.getpid()}-{next(_names)}"))
        os.makedirs(path, exist_ok=True)
        cgroup = cls(path)
        try:
            _write(os.path.join(path, "memory.max"), str(memory_bytes + MEMORY_HEADROOM_BYTES))
            swap = os.path.join(path, "memory.swap.max")
            if os.path.exists(swap):  # only where swap accounting is on
                _write(swap, "0")
            _write(os.path.join(path, "pids.max"), str(pids_max))
        except OSError:
            cgroup.remove()
            raise
        return cgroup

    def add(self, pid: int) -> None:
        """Move process `pid` (all its threads) into this cgroup; its later children are born inside."""
        _write(os.path.join(self.path, "cgroup.procs"), str(pid))

    def remove(self) -> bool:
        """Kill whatever is left inside (cgroup.kill, Linux 5.14+) and delete the cgroup; False if it stays.

        Blocks for up to REMOVE_TIMEOUT_S while killed processes exit; call it after the worker is dead.
        """
        kill = os.path.join(self.path, "cgroup.kill")
        deadline = time.monotonic() + REMOVE_TIMEOUT_S
        while True:
            try:
                os.rmdir(self.path)
                return True
            except FileNotFoundError:
                return True
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                    return False
            if os.path.exists(kill):
                try:
                    _write(kill, "1")
                except OSError:
                    pass
            time.sleep(0.05)


def worker_cgroups(pids: Iterable[int], root: str = CGROUP_ROOT, proc: str = "/proc") -> list[str]:
    """The workers' cgroups these processes run in, each with its limits: what really holds, for the doctor."""
    found = []
    for pid in sorted(pids):
        lines = _read(os.path.join(proc, str(pid), "cgroup")).splitlines()
        path = next((line[3:] for line in lines if line.startswith("0::")), "")
        if not os.path.basename(path).startswith(WORKER_PREFIX):
            continue
        cgroup = os.path.join(root, path.lstrip("/"))
        limits = {name: _read(os.path.join(cgroup, name)).strip() or "?" for name in ("memory.max", "pids.max")}
        memory = limits["memory.max"]
        memory = f"{int(memory) // MiB:,} MiB" if memory.isdigit() else memory
        described = f"{cgroup} (memory.max {memory}, pids.max {limits['pids.max']})"
        if described not in found:
            found.append(described)
    return found


def _read(path: str) -> str:
    try:
        with open(path) as handle:
            return handle.read()
    except OSError:
        return ""


def _write(path: str, text: str) -> None:
    """One write(2), as cgroupfs wants (each write to cgroup.procs moves one process)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(descriptor, text.encode())
    finally:
        os.close(descriptor)
