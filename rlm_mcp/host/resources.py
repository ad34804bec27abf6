"""What a worker takes of the machine, seen from the host: the files its stdout and stderr go to, its cgroup,
its CPU backstop and what it holds on disk. Kept apart from worker_host.py, which owns the process itself
(spawn, frames, calls, outcomes, signals, reap) and tells these when a worker starts and ends."""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp import safefs
from rlm_mcp.host.held import held_usage, inspectable
from rlm_mcp.host.proctree import descendants
from rlm_mcp.sandbox import cgroups
from rlm_mcp.sandbox.policy import SandboxPolicy

log = logging.getLogger(__name__)

STDERR_TAIL_CHARS = 2_000


@dataclass
class ScratchUsage:
    """What the worker holds on disk: `bytes` in all, of which `unnamed` in files with no name left (open
    or mapped after unlinking); `entries` under its scratch directory; and why part of it could not be seen."""

    bytes: int
    entries: int
    unnamed: int = 0
    unseen: str = ""
    descriptors: list[int] = field(default_factory=list)  # the worker's descriptors of the unnamed files


class Captures:
    """The files the worker's stdout and stderr go to: created afresh in the server's private directory at
    each start, handed to the worker as open descriptors, and read here through the server's own."""

    def __init__(self) -> None:
        self.descriptors: list[int] = []  # the server's descriptors on the worker's stdout and stderr files

    def open(self, private_dir: Path) -> list[int]:
        self.close()
        self.descriptors = [safefs.create_fresh(private_dir / f"{name}.capture") for name in ("stdout", "stderr")]
        return list(self.descriptors)

    def close(self) -> None:
        for descriptor in self.descriptors:
            os.close(descriptor)
        self.descriptors = []

    def stderr_tail(self) -> str:
        """The end of what the worker wrote to stderr, read through the server's own descriptor."""
        if len(self.descriptors) < 2:
            return ""
        descriptor = self.descriptors[1]
        size = os.fstat(descriptor).st_size
        return os.pread(descriptor, STDERR_TAIL_CHARS, max(0, size - STDERR_TAIL_CHARS)).decode("utf-8", "replace")

    def output_so_far(self, limit: int) -> tuple[str, int]:
        """The last `limit` characters a running cell has printed (as far as the worker has flushed it; it
        flushes before each sub-call), and how many bytes it has printed in all."""
        if not self.descriptors:
            return "", 0
        descriptor = self.descriptors[0]
        size = os.fstat(descriptor).st_size
        tail = os.pread(descriptor, limit, max(0, size - limit)).decode("utf-8", "replace")
        return tail, size


class WorkerResources:
    """The limits the host holds a worker to from outside: its cgroup, its CPU backstop, and the accounting
    of what it holds on disk. The policy is passed in at each step, as the host's may be replaced."""

    def __init__(self) -> None:
        self.cgroup: cgroups.WorkerCgroup | None = None
        self.held_blind = "not started"  # why the server cannot examine what the worker holds ("" if it can)
        self.scratch_real = ""  # the scratch directory with its links resolved, as /proc/<pid>/maps names it
        self.cpu_renewed: tuple[int | None, float] = (None, 0.0)  # the worker whose CPU limit was set, until when
        self.may_fork = True  # whether the worker may start processes (seccomp missing)

    def join_cgroup(self, parent: str | None, policy: SandboxPolicy, pids: Iterable[int]) -> None:
        """Put the worker in a cgroup of its own (memory.max counts what RLIMIT_DATA misses), where there is
        a delegated parent; without one, or if the kernel refuses, the rlimits and seccomp stand alone."""
        if parent is None or policy.mode == "off":
            return
        try:
            if self.cgroup is None:
                self.cgroup = cgroups.WorkerCgroup.create(parent, memory_bytes=policy.memory_bytes)
            for pid in pids:
                self.cgroup.add(pid)
        except OSError as exc:
            log.warning("could not give the worker a cgroup under %s: %s", parent, exc)

    async def leave_cgroup(self) -> None:
        cgroup, self.cgroup = self.cgroup, None
        if cgroup is not None and not await anyio.to_thread.run_sync(cgroup.remove):
            log.warning("the worker's cgroup %s could not be removed", cgroup.path)

    def started(self, pid: int | None, policy: SandboxPolicy, sandbox: list[dict[str, Any]]) -> None:
        """Note what the new worker's layers allow (may it fork?), and whether the disk cap can see the files
        it holds without a name; if not, say so in the report (as a gap of the limits layer) and the log."""
        self.may_fork = not any(layer["name"] == "processes" and layer["active"] for layer in sandbox)
        self.held_blind = inspectable(pid) if pid is not None else "the worker's process was not found"
        if not self.held_blind or policy.mode == "off":
            return
        gap = f"the disk cap counts only files with a name (the worker's descriptors: {self.held_blind})"
        log.warning("%s; run the server as root, or allow unprivileged user namespaces, to close this", gap)
        for layer in sandbox:
            if layer.get("name") == "limits":
                layer["detail"] = f"{layer['detail']}; {gap}"

    def renew_cpu_backstop(self, pid: int | None, policy: SandboxPolicy) -> None:
        """Allow the worker `policy.cell_cpu_s` more seconds of CPU from now, then SIGXCPU: a last resort in
        case the host's own timeout never fires. Set from here (prlimit), because the worker may not touch
        its CPU limit at all (seccomp): as its hard limit cannot be raised again once lowered, a per-request
        limit set by the worker itself would have to leave the hard one open, for a cell to raise."""
        if pid is None or policy.mode == "off" or not hasattr(resource, "prlimit"):
            return
        if self.cpu_renewed[0] == pid and time.monotonic() < self.cpu_renewed[1]:
            return  # the limit set last still leaves cell_cpu_s: reading /proc costs more than a cell
        try:
            # Twice the allowance, so the limit need not be renewed (nor /proc read) before every request:
            # only once the worker could have used up the spare half, at full speed on every CPU.
            soft = int(_cpu_seconds(pid) + 2 * policy.cell_cpu_s) + 1
            self.cpu_renewed = (pid, time.monotonic() + policy.cell_cpu_s / max(1, os.cpu_count() or 1))
            hard = resource.prlimit(pid, resource.RLIMIT_CPU)[1]
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.prlimit(pid, resource.RLIMIT_CPU, (soft, hard))
        except (OSError, ValueError) as exc:  # gone, or a kernel without prlimit: the host's timeout still holds
            log.debug("could not renew the worker's CPU backstop: %s", exc)

    def scratch_usage(
        self, pid: int | None, alive: bool, scratch_dir: Path, policy: SandboxPolicy, max_entries: int
    ) -> ScratchUsage:
        """What the worker holds on disk: what is allocated under its scratch directory (walked without
        following a link, and without being blinded by modes it set: safefs.walk_usage), plus the files it
        holds open or mapped with no name left (held.py), each file once; entries are the walk's."""
        walked = safefs.walk_usage(scratch_dir, max_entries)
        usage = ScratchUsage(walked.bytes, walked.entries, unseen=walked.unseen)
        if pid is None or self.held_blind or not alive:
            return usage
        pids = {pid, *descendants(pid)} if self.may_fork else {pid}
        try:
            device = os.stat(scratch_dir).st_dev
        except OSError:
            return usage
        scratch = self.scratch_real or os.path.realpath(scratch_dir)  # as /proc/<pid>/maps names files
        self.scratch_real = scratch
        held = held_usage(pids, scratch, device, walked.seen, policy.write_bytes)
        usage.bytes += held.bytes
        usage.unnamed = held.bytes
        usage.descriptors = sorted(held.descriptors)
        usage.unseen = usage.unseen or held.unseen
        return usage


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time process `pid` has used so far (/proc/<pid>/stat, which any user may read)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        stat = handle.read()
    fields = stat[stat.rfind(b")") + 2 :].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
