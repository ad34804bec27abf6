"""The host side of a REPL worker: spawn it, send it requests, and get control back whatever it does.

A request ends in one of four ways, and the caller is always told which: the worker answered (`ok`); it
ran past its time limit and stopped when interrupted (`interrupted`, state kept); it ignored the interrupt
and its whole process group was killed (`killed`, state lost); or it died on its own (`crashed`, state
lost: os._exit, a signal, a segfault, the OOM killer, a protocol violation).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import anyio
import anyio.abc

from rlm_mcp import safefs
from rlm_mcp.bridge import frames, ops
from rlm_mcp.errors import WorkerStartError
from rlm_mcp.host.proctree import descendants, kill_tree
from rlm_mcp.host.resources import STDERR_TAIL_CHARS, Captures, ScratchUsage, WorkerResources
from rlm_mcp.sandbox import bubblewrap, exposure
from rlm_mcp.sandbox.policy import SandboxPolicy, summary

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0
REAP_TIMEOUT_S = 5.0
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
        self._captures = Captures()
        self._resources = WorkerResources()  # its cgroup, CPU backstop and disk accounting
        self.sandbox: list[dict[str, Any]] = []  # the last worker's report of its layers
        self.lockdown_s = 0.0  # how long the last worker took to apply them
        self._process: anyio.abc.Process | None = None
        self._wrapped = False  # running inside bubblewrap
        self._worker_pid: int | None = None  # as seen from here (differs from _process.pid under bubblewrap)
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
        self._captures.close()
        log_path = self.private_dir / "worker.log"
        log_fd = safefs.create_fresh(log_path, readable=False)
        captured = self._captures.open(self.private_dir)
        extra_paths = [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if os.path.isabs(p)]
        program = _program(self.policy, self.program)
        worker = [sys.executable, "-I", "-c", program, WORKER_MARKER, PACKAGE_PARENT, *map(str, captured)]
        worker, bwrap_fds, bwrap_detail = _wrap(worker, self.policy)
        self._wrapped = bool(bwrap_fds)
        passed = [*captured, *bwrap_fds]
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
            for descriptor in [log_fd, *bwrap_fds]:
                os.close(descriptor)
        self._resources.join_cgroup(self.cgroup_parent, self.policy, [self._process.pid])
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
        self._worker_pid = _find_worker_pid(self._process.pid, self._wrapped)
        # and what bwrap forked before the first move
        self._resources.join_cgroup(self.cgroup_parent, self.policy, descendants(self._process.pid))
        wrapping = {"name": "bubblewrap", "active": self._wrapped, "detail": bwrap_detail}
        self.sandbox = [wrapping, *(hello.get("sandbox") or [])]
        exposure.workers_report(self.sandbox)  # processes holding secrets wait only where it cannot read them
        self._resources.started(self._worker_pid, self.policy, self.sandbox)
        self.lockdown_s = float(hello.get("lockdown_s") or 0.0)
        log.debug("worker %s started (python %s); %s", hello.get("pid"), hello.get("python"), summary(self.sandbox))
        missing = [layer for layer in self.sandbox if not layer["active"]]
        if self.policy.mode == "strict" and missing:
            await self.kill()
            raise WorkerStartError(_strict_refusal(missing))

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
        self._resources.renew_cpu_backstop(self._worker_pid, self.policy)
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
            stderr_tail=self._captures.stderr_tail(),
        )

    async def _crashed(self, cause: str) -> CallOutcome:
        returncode = await self._reap()
        if self._wrapped and returncode is not None and returncode > 128:
            returncode = 128 - returncode  # bubblewrap's way of saying "killed by signal N"
        detail = describe_exit(returncode) if cause == "eof" else cause
        return CallOutcome("crashed", cause=detail, stderr_tail=self._captures.stderr_tail())

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
        await self._resources.leave_cgroup()
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
        self._captures.close()

    def output_so_far(self, limit: int) -> tuple[str, int]:
        """What a running cell has printed so far: Captures.output_so_far."""
        return self._captures.output_so_far(limit)

    def scratch_usage(self, max_entries: int) -> ScratchUsage:
        """What the worker holds on disk: WorkerResources.scratch_usage."""
        return self._resources.scratch_usage(self._worker_pid, self.alive, self.scratch_dir, self.policy, max_entries)

    @property
    def _cgroup(self) -> object | None:
        """The worker's cgroup, if it has one now (the tests check it is given back)."""
        return self._resources.cgroup


def _program(policy: SandboxPolicy, program: str) -> str:
    """The worker's program: re-executed in a user namespace of its own first where that is what lets
    this server examine it (not root, the sandbox on, the real worker rather than a test's stand-in)."""
    own_namespace = sys.platform == "linux" and os.geteuid() != 0 and policy.mode != "off"
    return INSPECTABLE_BOOTSTRAP if own_namespace and program == BOOTSTRAP else program


def _wrap(worker: list[str], policy: SandboxPolicy) -> tuple[list[str], list[int], str]:
    """The worker's command inside bubblewrap where it can be had (with the descriptor bubblewrap reads its
    options from, to pass on and close after the spawn), or as it is; and what the report says of it."""
    hidden = tuple(policy.hidden)
    off = policy.mode == "off"
    bwrap, bwrap_detail = (None, "RLM_MCP_SANDBOX=off") if off else bubblewrap.availability(hidden)
    revealed = [p for p in policy.read_only if any(p == h or p.startswith(h.rstrip("/") + "/") for h in hidden)]
    for path in revealed:  # e.g. the session's fetched URLs, inside the hidden workspace: made before the bind
        safefs.private_dir(Path(path))
    if bwrap is None:
        return worker, [], bwrap_detail
    wrapped, options_fd = bubblewrap.command(bwrap, worker, list(policy.read_write), list(policy.hidden), revealed)
    return wrapped, [options_fd], bwrap_detail


def _find_worker_pid(root: int, wrapped: bool) -> int | None:
    """The worker's pid as seen from here: `root`, the spawned process, unless bubblewrap runs it."""
    if not wrapped:
        return root
    for pid in sorted(descendants(root)):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                # bwrap's own processes carry the worker's command line as their arguments
                if handle.read().split(b"\0")[4:5] == [WORKER_MARKER.encode()]:
                    return pid
        except OSError:
            continue
    return None


def _strict_refusal(missing: list[dict[str, Any]]) -> str:
    return (
        "RLM_MCP_SANDBOX=strict, and this machine cannot provide every layer: "
        + "; ".join(f"{layer['name']}: {layer['detail']}" for layer in missing)
        + ". Run `rlm-mcp doctor` for the full report, or set RLM_MCP_SANDBOX=auto to run with what there is"
    )
