"""The host side of a REPL worker: spawn it, send it requests, and get control back whatever it does.

A request ends in one of four ways, and the caller is always told which: the worker answered (`ok`); it
ran past its time limit and stopped when interrupted (`interrupted`, state kept); it ignored the interrupt
and its whole process group was killed (`killed`, state lost); or it died on its own (`crashed`, state
lost: os._exit, a signal, a segfault, the OOM killer, a protocol violation).
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import anyio
import anyio.abc

from rlm_mcp import safefs
from rlm_mcp.bridge import frames, ops
from rlm_mcp.errors import WorkerStartError
from rlm_mcp.host.held import held_usage, inspectable
from rlm_mcp.host.proctree import descendants, kill_tree
from rlm_mcp.sandbox import bubblewrap, cgroups, exposure
from rlm_mcp.sandbox.policy import SandboxPolicy, summary

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
REAP_TIMEOUT_S = 5.0
STDERR_TAIL_CHARS = 2_000
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
# The worker's command line: no session handle or path on it (any local process can read a command line).
# -I: no PYTHON* variables, no user site-packages, no working directory on sys.path, so nothing in a
# directory the worker could write is imported before it has locked itself down.
WORKER_MARKER = "rlm-mcp-worker"
_PRELUDE = "import sys; sys.path.insert(0, sys.argv[2]); sys.dont_write_bytecode = True; "
_MAIN = "from rlm_mcp.worker.repl import main; sys.exit(main(sys.argv[2:]))"
BOOTSTRAP = _PRELUDE + _MAIN
# A server that is not root can examine the worker's descriptors (for the disk cap) only if the worker runs
# in a user namespace the server's user owns: the worker first re-executes itself in one (worker/inspectable.py).
INSPECTABLE_BOOTSTRAP = _PRELUDE + f"from rlm_mcp.worker.inspectable import reexec; reexec({BOOTSTRAP!r}); " + _MAIN

Fate = Literal["ok", "interrupted", "killed", "crashed"]
RequestHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]

_SIGNAL_CAUSES = {
    signal.SIGSEGV: "segmentation fault",
    signal.SIGBUS: "bus error",
    signal.SIGABRT: "aborted",
    signal.SIGFPE: "floating-point exception",
    signal.SIGILL: "illegal instruction",
    signal.SIGKILL: "killed: out of memory, or by another process",
    signal.SIGXCPU: "CPU time limit exceeded",
    signal.SIGXFSZ: "file size limit exceeded",
}


ReplyT = TypeVar("ReplyT")


@dataclass
class CallOutcome(Generic[ReplyT]):
    """How a request ended, and the reply if there was one (typed by the operation: host/client.py)."""

    fate: Fate
    reply: ReplyT | None = None
    cause: str = ""
    stderr_tail: str = ""


@dataclass
class ScratchUsage:
    """What the worker holds on disk: `bytes` in all, of which `unnamed` in files with no name left (open
    or mapped after unlinking); `entries` under its scratch directory; and why part of it could not be seen."""

    bytes: int
    entries: int
    unnamed: int = 0
    unseen: str = ""
    descriptors: list[int] = field(default_factory=list)  # the worker's descriptors of the unnamed files


class _WorkerGone(Exception):
    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "the worker stopped answering"
    if returncode < 0:
        try:
            sig = signal.Signals(-returncode)
        except ValueError:
            return f"the worker was killed by signal {-returncode}"
        cause = _SIGNAL_CAUSES.get(sig, "killed by a signal")
        return f"the worker died of {sig.name} ({cause})"
    return f"the worker exited with code {returncode}"


def _has_exited(pid: int) -> bool:
    """Whether our child has exited, even if the event loop has not yet run the callback that records it.

    WNOWAIT peeks without reaping, so the loop's child watcher still collects the exit status.
    """
    if not hasattr(os, "waitid"):  # not on every Unix; the event loop's returncode then decides alone
        return False
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # already reaped by the child watcher
        return True


# size: a worker's process, spawn to reap; next: captures, cgroup, disk apart
class WorkerHost:
    """One session's worker process.

    `private_dir` is the server's (the worker can neither read nor write it): the worker's log and the
    files its stdout and stderr go to are created there afresh at each start and handed over as open
    descriptors. `scratch_dir` is the only directory the worker may write.
    """

    def __init__(
        self,
        *,
        private_dir: Path,
        scratch_dir: Path,
        env: dict[str, str],
        policy: SandboxPolicy,
        cgroup_parent: str | None = None,
        program: str = BOOTSTRAP,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        """`cgroup_parent`: a delegated cgroup v2 under which each worker gets its own (sandbox/cgroups.py).
        `program`: the Python source the worker runs (the unit tests give stand-ins that misbehave)."""
        self.private_dir = private_dir
        self.scratch_dir = scratch_dir
        self.env = env
        self.policy = policy
        self.cgroup_parent = cgroup_parent
        self.program = program
        self.start_timeout_s = start_timeout_s
        self._cgroup: cgroups.WorkerCgroup | None = None
        self._captures: list[int] = []  # the server's descriptors on the worker's stdout and stderr files
        self.sandbox: list[dict[str, Any]] = []  # the last worker's report of its layers
        self.lockdown_s = 0.0  # how long the last worker took to apply them
        self._process: anyio.abc.Process | None = None
        self._wrapped = False  # running inside bubblewrap
        self._worker_pid: int | None = None  # as seen from here (differs from _process.pid under bubblewrap)
        self._held_blind = "not started"  # why the server cannot examine what the worker holds ("" if it can)
        self._scratch_real = ""  # the scratch directory with its links resolved, as /proc/<pid>/maps names it
        self._cpu_renewed: tuple[int | None, float] = (None, 0.0)  # the worker whose CPU limit was set, until when
        self._may_fork = True  # whether the worker may start processes (seccomp missing)
        self._frames = frames.FrameBuffer()
        self._next_id = 0
        self.starts = 0

    @property
    def work_dir(self) -> Path:
        """The worker's working directory, inside its scratch directory."""
        return self.scratch_dir / "work"

    @property
    def alive(self) -> bool:
        process = self._process
        return process is not None and process.returncode is None and not _has_exited(process.pid)

    async def start(self) -> None:
        safefs.private_dir(self.private_dir)
        safefs.private_dir(self.scratch_dir)
        self._close_captures()
        log_path = self.private_dir / "worker.log"
        log_fd = safefs.create_fresh(log_path, readable=False)
        self._captures = [safefs.create_fresh(self.private_dir / f"{name}.capture") for name in ("stdout", "stderr")]
        extra_paths = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
        worker = [sys.executable, "-I", "-c", self._program(), WORKER_MARKER, PACKAGE_PARENT, *map(str, self._captures)]
        hidden = tuple(self.policy.hidden)
        off = self.policy.mode == "off"
        bwrap, bwrap_detail = (None, "RLM_MCP_SANDBOX=off") if off else bubblewrap.availability(hidden)
        self._wrapped = bwrap is not None
        passed = list(self._captures)
        revealed = [
            p for p in self.policy.read_only if any(p == h or p.startswith(h.rstrip("/") + "/") for h in hidden)
        ]
        for path in revealed:  # e.g. the session's fetched URLs, inside the hidden workspace: made before the bind
            safefs.private_dir(Path(path))
        if bwrap is not None:
            policy = self.policy
            worker, options_fd = bubblewrap.command(
                bwrap, worker, list(policy.read_write), list(policy.hidden), revealed
            )
            passed.append(options_fd)
        try:
            self._process = await anyio.open_process(
                worker,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_fd,
                cwd="/",  # nothing of the session's: a process's directory is one more thing others can see
                env=self.env,
                pass_fds=passed,
                start_new_session=True,  # its own process group, so a kill takes its children too
            )
        finally:
            for descriptor in [log_fd, *passed[len(self._captures) :]]:
                os.close(descriptor)
        self._join_cgroup([self._process.pid])
        self._frames = frames.FrameBuffer()
        self.starts += 1
        try:
            # The policy names the session's directories: it goes over the pipe, not on the command line.
            policy = self.policy.as_dict()
            await self._send({"op": ops.START, "policy": policy, "paths": extra_paths, "work_dir": str(self.work_dir)})
            with anyio.fail_after(self.start_timeout_s):
                hello = await self._next_frame()
        except (TimeoutError, _WorkerGone, frames.ProtocolError) as exc:
            await self.kill()
            printed = safefs.read_tail(log_path, STDERR_TAIL_CHARS).decode("utf-8", "replace")
            why = str(exc) or f"no ready message within {self.start_timeout_s:g} s"
            raise WorkerStartError(f"the REPL worker failed to start ({why}): {printed.strip()}") from None
        if hello.get("op") != ops.READY:
            await self.kill()
            raise WorkerStartError(f"the REPL worker sent {hello!r} instead of its ready message")
        self._worker_pid = self._find_worker_pid()
        self._join_cgroup(descendants(self._process.pid))  # what bwrap forked before the first move
        wrapping = {"name": "bubblewrap", "active": self._wrapped, "detail": bwrap_detail}
        self.sandbox = [wrapping, *(hello.get("sandbox") or [])]
        exposure.workers_report(self.sandbox)  # processes holding secrets wait only where it cannot read them
        self._may_fork = not any(layer["name"] == "processes" and layer["active"] for layer in self.sandbox)
        self._check_held_visible()
        self.lockdown_s = float(hello.get("lockdown_s") or 0.0)
        log.debug("worker %s started (python %s); %s", hello.get("pid"), hello.get("python"), summary(self.sandbox))
        missing = [layer for layer in self.sandbox if not layer["active"]]
        if self.policy.mode == "strict" and missing:
            await self.kill()
            raise WorkerStartError(
                "RLM_MCP_SANDBOX=strict, and this machine cannot provide every layer: "
                + "; ".join(f"{layer['name']}: {layer['detail']}" for layer in missing)
                + ". Run `rlm-mcp doctor` for the full report, or set RLM_MCP_SANDBOX=auto to run with what there is"
            )

    def _program(self) -> str:
        """The worker's program: re-executed in a user namespace of its own first where that is what lets
        this server examine it (not root, the sandbox on, the real worker rather than a test's stand-in)."""
        own_namespace = sys.platform == "linux" and os.geteuid() != 0 and self.policy.mode != "off"
        return INSPECTABLE_BOOTSTRAP if own_namespace and self.program == BOOTSTRAP else self.program

    def _check_held_visible(self) -> None:
        """Whether the disk cap can see the files the worker holds without a name; if not, say so in the
        report (as a gap of the limits layer) and the log, once per worker."""
        pid = self._worker_pid
        self._held_blind = inspectable(pid) if pid is not None else "the worker's process was not found"
        if not self._held_blind or self.policy.mode == "off":
            return
        gap = f"the disk cap counts only files with a name (the worker's descriptors: {self._held_blind})"
        log.warning("%s; run the server as root, or allow unprivileged user namespaces, to close this", gap)
        for layer in self.sandbox:
            if layer.get("name") == "limits":
                layer["detail"] = f"{layer['detail']}; {gap}"

    def _renew_cpu_backstop(self) -> None:
        """Allow the worker `policy.cell_cpu_s` more seconds of CPU from now, then SIGXCPU: a last resort in
        case this host's own timeout never fires. Set from here (prlimit), because the worker may not touch
        its CPU limit at all (seccomp): as its hard limit cannot be raised again once lowered, a per-request
        limit set by the worker itself would have to leave the hard one open, for a cell to raise."""
        pid = self._worker_pid
        if pid is None or self.policy.mode == "off" or not hasattr(resource, "prlimit"):
            return
        if self._cpu_renewed[0] == pid and time.monotonic() < self._cpu_renewed[1]:
            return  # the limit set last still leaves cell_cpu_s: reading /proc costs more than a cell
        try:
            # Twice the allowance, so the limit need not be renewed (nor /proc read) before every request:
            # only once the worker could have used up the spare half, at full speed on every CPU.
            soft = int(_cpu_seconds(pid) + 2 * self.policy.cell_cpu_s) + 1
            self._cpu_renewed = (pid, time.monotonic() + self.policy.cell_cpu_s / max(1, os.cpu_count() or 1))
            hard = resource.prlimit(pid, resource.RLIMIT_CPU)[1]
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            resource.prlimit(pid, resource.RLIMIT_CPU, (soft, hard))
        except (OSError, ValueError) as exc:  # gone, or a kernel without prlimit: the host's timeout still holds
            log.debug("could not renew the worker's CPU backstop: %s", exc)

    async def call(
        self,
        request: dict[str, Any],
        *,
        timeout: float | None,
        grace: float,
        on_request: RequestHandler | None = None,
    ) -> CallOutcome[dict[str, Any]]:
        """Send one request and wait for its reply, interrupting and then killing the worker if needed.

        While it waits, the worker may send requests of its own (sub-calls from user code); `on_request`
        answers them. They count against the same time limit as the request that caused them.
        """
        if not self.alive:
            await self.start()
        self._next_id += 1
        request_id = self._next_id
        self._renew_cpu_backstop()
        try:
            await self._send({**request, "id": request_id})
            with anyio.move_on_after(timeout):
                return CallOutcome("ok", await self._reply(request_id, on_request))
            return await self._stop_overrunning(request_id, grace, f"timed out after {timeout:g} s")
        except _WorkerGone as gone:
            return await self._crashed(gone.cause)
        except frames.ProtocolError as exc:
            await self.kill()
            return await self._crashed(f"protocol violation by the worker: {exc}")
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._stop_overrunning(request_id, grace, "cancelled by the client")
            raise

    async def _stop_overrunning(self, request_id: int, grace: float, why: str) -> CallOutcome:
        self._signal(signal.SIGINT)
        try:
            with anyio.move_on_after(grace):
                return CallOutcome("interrupted", await self._reply(request_id), cause=why)
        except (_WorkerGone, frames.ProtocolError):
            pass
        await self.kill()
        return CallOutcome(
            "killed",
            cause=f"{why}; the code did not stop within {grace:g} s of an interrupt, so the worker was killed",
            stderr_tail=self._stderr_tail(),
        )

    def _find_worker_pid(self) -> int | None:
        assert self._process is not None
        if not self._wrapped:
            return self._process.pid
        for pid in sorted(descendants(self._process.pid)):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    # bwrap's own processes carry the worker's command line as their arguments
                    if handle.read().split(b"\0")[4:5] == [WORKER_MARKER.encode()]:
                        return pid
            except OSError:
                continue
        return None

    async def _crashed(self, cause: str) -> CallOutcome:
        returncode = await self._reap()
        if self._wrapped and returncode is not None and returncode > 128:
            returncode = 128 - returncode  # bubblewrap's way of saying "killed by signal N"
        detail = describe_exit(returncode) if cause == "eof" else cause
        return CallOutcome("crashed", cause=detail, stderr_tail=self._stderr_tail())

    async def _send(self, message: dict[str, Any]) -> None:
        assert self._process is not None and self._process.stdin is not None
        try:
            await self._process.stdin.send(frames.encode(message))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, BrokenPipeError, ConnectionError):
            raise _WorkerGone("eof") from None

    async def _reply(self, request_id: int, on_request: RequestHandler | None = None) -> dict[str, Any]:
        while True:
            frame = await self._next_frame()
            if "op" not in frame:
                if frame.get("id") != request_id:
                    raise frames.ProtocolError(f"reply for request {frame.get('id')!r}, expected {request_id}")
                return frame
            if on_request is None:
                answer = {"ok": False, "error": "the host is not taking requests now (the cell is being stopped)"}
            else:
                answer = await on_request(frame)
            await self._send({**answer, "id": frame.get("id")})

    async def _next_frame(self) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        while True:
            frame = self._frames.next_frame()
            if frame is not None:
                return frame
            try:
                chunk = await self._process.stdout.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise _WorkerGone("eof") from None
            self._frames.feed(chunk)

    def interrupt(self) -> None:
        """Ask the running code to stop (KeyboardInterrupt in the cell)."""
        self._signal(signal.SIGINT)

    def _signal(self, sig: int) -> None:
        if self._process is not None and self._process.returncode is None and self._worker_pid is not None:
            try:
                os.kill(self._worker_pid, sig)
            except ProcessLookupError:
                pass

    async def _reap(self) -> int | None:
        if self._process is None:
            return None
        with anyio.move_on_after(REAP_TIMEOUT_S):
            await self._process.wait()
        returncode = self._process.returncode
        await self._discard()
        await self._leave_cgroup()
        return returncode

    async def kill(self) -> None:
        """Kill the worker and every process it started (see proctree), and reap it."""
        if self._process is None:
            return
        kill_tree(self._process.pid)
        await self._reap()

    async def _discard(self) -> None:
        """Close the pipes and their transports too (closing the streams alone leaves the transports open)."""
        if self._process is None:
            return
        with anyio.move_on_after(REAP_TIMEOUT_S, shield=True):
            await self._process.aclose()
        self._process = None

    async def close(self) -> None:
        await self.kill()
        self._close_captures()

    def _join_cgroup(self, pids: Iterable[int]) -> None:
        """Put the worker in a cgroup of its own (memory.max counts what RLIMIT_DATA misses), where there is
        a delegated parent; without one, or if the kernel refuses, the rlimits and seccomp stand alone."""
        if self.cgroup_parent is None or self.policy.mode == "off":
            return
        try:
            if self._cgroup is None:
                self._cgroup = cgroups.WorkerCgroup.create(self.cgroup_parent, memory_bytes=self.policy.memory_bytes)
            for pid in pids:
                self._cgroup.add(pid)
        except OSError as exc:
            log.warning("could not give the worker a cgroup under %s: %s", self.cgroup_parent, exc)

    async def _leave_cgroup(self) -> None:
        cgroup, self._cgroup = self._cgroup, None
        if cgroup is not None and not await anyio.to_thread.run_sync(cgroup.remove):
            log.warning("the worker's cgroup %s could not be removed", cgroup.path)

    def _close_captures(self) -> None:
        for descriptor in self._captures:
            os.close(descriptor)
        self._captures = []

    def _stderr_tail(self) -> str:
        """The end of what the worker wrote to stderr, read through the server's own descriptor."""
        if len(self._captures) < 2:
            return ""
        descriptor = self._captures[1]
        size = os.fstat(descriptor).st_size
        return os.pread(descriptor, STDERR_TAIL_CHARS, max(0, size - STDERR_TAIL_CHARS)).decode("utf-8", "replace")

    def output_so_far(self, limit: int) -> tuple[str, int]:
        """The last `limit` characters a running cell has printed (as far as the worker has flushed it; it
        flushes before each sub-call), and how many bytes it has printed in all."""
        if not self._captures:
            return "", 0
        descriptor = self._captures[0]
        size = os.fstat(descriptor).st_size
        tail = os.pread(descriptor, limit, max(0, size - limit)).decode("utf-8", "replace")
        return tail, size

    def scratch_usage(self, max_entries: int) -> ScratchUsage:
        """What the worker holds on disk: what is allocated under its scratch directory (walked without
        following a link, and without being blinded by modes it set: safefs.walk_usage), plus the files it
        holds open or mapped with no name left (held.py), each file once; entries are the walk's."""
        walked = safefs.walk_usage(self.scratch_dir, max_entries)
        usage = ScratchUsage(walked.bytes, walked.entries, unseen=walked.unseen)
        pid = self._worker_pid
        if pid is None or self._held_blind or not self.alive:
            return usage
        pids = {pid, *descendants(pid)} if self._may_fork else {pid}
        try:
            device = os.stat(self.scratch_dir).st_dev
        except OSError:
            return usage
        scratch = self._scratch_real or os.path.realpath(self.scratch_dir)  # as /proc/<pid>/maps names files
        self._scratch_real = scratch
        held = held_usage(pids, scratch, device, walked.seen, self.policy.write_bytes)
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
