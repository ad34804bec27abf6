"""The Ray driver, a process of its own: the only place rlm-mcp imports Ray or unpickles what a task returned.

Ray hands a task's return value back as a pickle, and a pickle runs code when it is loaded. What the tasks
return is built from plain data by cluster/pieces.py, but a node is only as sound as its Python installation,
so the server never loads one: it starts this driver (maps.DRIVER: `python -c ... <package parent> <address>`)
with an environment holding no secrets (an allow-list: no API key, no token; Ray's own RAY_* settings pass)
and talks to it in the protocol's frames (4-byte length, JSON object, capped) on its stdin and stdout.

Requests: {"op": "map", "kind": "function"|"llm", "urls": [...], "arguments": [...], "timeout_s": s,
"budget": bytes of result frames the server keeps (past it, a result is sent as an error that says so)}.
Replies, per map: {"op": "result", "index": i, "result": {"ok": true, ...fields} | {"ok": false, "error"}}
as each task finishes, then {"op": "done"} (with "error" when the map could not run at all, and "lost":
"join"|"map" when Ray itself failed joining the cluster or mapping: the server then tells a dead cluster
from a dead connection, and Ray's own words go to this process's stderr, for the server's log, never to the
model). The server checks every field again as hostile input (cluster/maps.py).

Ray retries a task whose worker or node died, up to MAP_RETRIES times, never one whose code raised: that
is the model's function (or its object) failing, and it would fail the same way again.

The driver joins the cluster on its first map and then serves maps one at a time for the server's life. If
the cluster dies under it, Ray's core library may end this process: the server sees the pipe close, fails
the map with one line, and starts a new driver for the next. The driver dies with the server
(PR_SET_PDEATHSIG), holds no capabilities and is not dumpable, so even a pickle that ran code here finds
no secret in its environment and cannot read the server's.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from typing import Any, BinaryIO

from rlm_mcp.bridge import frames, ops
from rlm_mcp.cluster import pieces
from rlm_mcp.errors import MapFailure
from rlm_mcp.sandbox.policy import SYSTEM_READ_ONLY, python_paths
from rlm_mcp.sandbox.prctl import drop_privileges, make_undumpable
from rlm_mcp.worker.lockdown import landlock

MAP_RETRIES = 2
WAIT_S = 0.5
MAX_ERROR_CHARS = 500
TASKS = {"function": pieces.run_function, "llm": pieces.make_prompt}
# Ray's exceptions for a task that did not fail by itself, by name (the server never imports Ray).
SYSTEM_FAILURES = {
    "WorkerCrashedError": "the Ray worker running it died",
    "NodeDiedError": "the node running it died",
    "OutOfMemoryError": "its node ran out of memory",
    "TaskCancelledError": "it was cancelled",
    "ObjectLostError": "its result was lost with its node",
    "LocalRayletDiedError": "the node running it died",
}
PR_SET_PDEATHSIG = 1
# What Ray's driver reads and writes (its session directory and sockets under the temp directory, shared
# memory, /proc and /sys for its metrics); not the user's home, not the server's workspace, unless they lie
# in one of these.
DRIVER_READ_ONLY = ("/etc", "/proc", "/sys", "/dev", "/run")
DRIVER_READ_WRITE = ("/tmp", "/var/tmp", "/dev/shm", "/dev/null")


class _Refused(Exception):
    """The map cannot run at all (no Ray here, a malformed request); the message says what to do."""


def connect(address: str) -> Any:
    try:
        import ray
    except ImportError:
        raise _Refused("rlm_map and llm_map need `pip install 'rlm-mcp[ray]'` in the server's environment") from None
    # A driver joining a running cluster: it starts no Ray process here. A failure is Ray's (main says it).
    ray.init(address=address, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
    return ray


def run_map(ray: Any, request: dict[str, Any], out: int) -> None:
    """One task per URL; each result sent as it finishes, in any order; at the deadline the rest is cancelled."""
    kind, urls, arguments = request.get("kind"), request.get("urls"), request.get("arguments")
    if kind not in TASKS or not isinstance(urls, list) or not isinstance(arguments, list):
        raise _Refused("malformed map request")
    deadline = time.monotonic() + float(request.get("timeout_s") or 0)
    results = Results(out, kind, request.get("budget"))
    remote = ray.remote(max_retries=MAP_RETRIES, retry_exceptions=False)(TASKS[kind])
    refs = [remote.remote(url, *arguments) for url in urls]
    position = {ref: index for index, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        if time.monotonic() >= deadline:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
                send(out, {"op": ops.RESULT, "index": position[ref],
                           "result": {"ok": False, "error": "stopped at the cell's time limit"}})  # fmt: skip
            return
        ready, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)
        for ref in ready:
            results.send(position[ref], _fetch(ray, ref))


class Results:
    """Sends a map's results within its budget, the bytes of the frames of the results sent whole (counted as
    the server counts them): a result that would pass it is sent as an error that says so, without its value."""

    def __init__(self, out: int, kind: str, budget: Any) -> None:
        self.out, self.kind = out, kind
        self.budget = budget if type(budget) is int else None
        self.kept = 0

    def send(self, index: int, result: dict[str, Any]) -> None:
        frame = frames.encode({"op": ops.RESULT, "index": index, "result": result})
        if result.get("ok") is True and self.budget is not None:
            size = len(frame) - frames.HEADER.size
            if self.kept + size > self.budget:
                said = {"ok": False, "error": pieces.left_out(self.kind, self.budget)}
                frame = frames.encode({"op": ops.RESULT, "index": index, "result": said})
            else:
                self.kept += size
        data = memoryview(frame)
        while data:
            data = data[os.write(self.out, data) :]


def _fetch(ray: Any, ref: Any) -> dict[str, Any]:
    """A task's fields as plain JSON data, or its error after the retries."""
    try:
        got = ray.get(ref)
    except Exception as exc:
        return {"ok": False, "error": _error_of(exc)}
    if not isinstance(got, dict):
        return {"ok": False, "error": "the task answered something other than its fields"}
    try:
        return {"ok": True, **json.loads(json.dumps(got))}
    except (TypeError, ValueError, RecursionError):
        return {"ok": False, "error": "the task answered something other than plain data"}


def _error_of(exc: BaseException) -> str:
    """What the model reads of a task that failed: the reason the task gave (its function's error, say), or
    for a worker or node that died what died; Ray's own text goes to stderr."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, MapFailure):
        return _text(cause)[:MAX_ERROR_CHARS]
    if isinstance(cause, BaseException):  # the task's own code raised (reading or decompressing the object)
        return f"{type(cause).__name__}: {_text(cause)}"[:MAX_ERROR_CHARS]
    print(f"rlm-mcp ray driver: a task failed: {_text(exc)[:4_000]}", file=sys.stderr)
    died = SYSTEM_FAILURES.get(type(exc).__name__, f"Ray failed it ({type(exc).__name__})")
    return f"{died} (after {MAP_RETRIES} retries)"


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a hostile __str__
        return type(exc).__name__


def send(out: int, message: dict[str, Any]) -> None:
    frames.write_frame(out, message)


def _die_with_server() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _confine() -> None:
    """Landlock, where the kernel has it: the driver may write only temporary directories, and read only
    Python, the system and Ray's temp directory. A pickle that ran code here then cannot touch the server's
    workspace or the user's files (best effort: Ray's own temp directory must lie in one of these)."""
    temp = [os.environ[name] for name in ("TMPDIR", "RAY_TMPDIR") if os.path.isabs(os.environ.get(name, ""))]
    try:
        landlock.restrict(
            [*python_paths(), *SYSTEM_READ_ONLY, *DRIVER_READ_ONLY], [*DRIVER_READ_WRITE, *temp], deny_tcp=False
        )
    except OSError as exc:
        print(f"rlm-mcp ray driver: no Landlock ({exc}); it keeps the user's file rights", file=sys.stderr)


def _take_over_descriptors() -> tuple[BinaryIO, int]:
    """The frames move off fds 0 and 1; fd 1 then points at stderr, so nothing Ray prints breaks a frame."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return requests, replies


def main(argv: list[str]) -> int:
    """argv: [package parent, cluster address]."""
    _die_with_server()
    drop_privileges()
    make_undumpable()
    _confine()
    requests, replies = _take_over_descriptors()
    address = argv[1]
    ray = None
    while True:
        try:
            request = frames.read_frame(requests)
        except frames.ProtocolError as exc:
            print(f"rlm-mcp ray driver: protocol violation: {exc}", file=sys.stderr)
            return 3
        if request is None:
            return 0
        stage = "join"
        try:
            if request.get("op") != ops.MAP:
                raise _Refused("unknown request")
            ray = ray or connect(address)
            stage = "map"
            run_map(ray, request, replies)
            send(replies, {"op": ops.DONE})
        except _Refused as exc:
            send(replies, {"op": ops.DONE, "error": str(exc)})
        except Exception as exc:  # Ray's own failures: its words to the log; the server tells the model
            print(f"rlm-mcp ray driver: the {stage} failed: {_text(exc)[:4_000]}", file=sys.stderr)
            send(replies, {"op": ops.DONE, "error": type(exc).__name__, "lost": stage})


if __name__ == "__main__":
    sys.exit(main(sys.argv))
