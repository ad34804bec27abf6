"""The MCP Tasks extension (`io.modelcontextprotocol/tasks`, 2026-07-28), for clients that declare it.

A client that puts the extension in a tools/call's capabilities may be answered with a task handle
instead of a result; it then polls `tasks/get` until the task is done and reads the result there. For
such clients a `run_code` that is still going after PROMOTE_AFTER_S becomes a task: the cell runs to
its own time limit with no `wait_s` cut-off, and the client's polling replaces the model's
`run_code()`-without-code. Other tools, and clients that do not declare the extension, are served as
usual (`wait_s` and `running`, see running.py).

Task ids are unguessable and bound to the caller's credentials (its Authorization header): the id alone
does not reach another client's task. Finished tasks are kept TASK_TTL_S from creation, at most
MAX_TASKS at once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolRequestParams, RequestParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel

from rlm_mcp.session.running import Spawn

log = logging.getLogger(__name__)

TASKS_EXTENSION = "io.modelcontextprotocol/tasks"
TASK_TOOLS = frozenset({"run_code"})  # the one tool whose calls can outlast a host's patience
PROMOTE_AFTER_S = 1.0  # a call done sooner is answered with its result: no polling for quick cells
TASK_TTL_S = 3_600.0
POLL_INTERVAL_MS = 1_000
MAX_TASKS = 256


class TaskIdParams(RequestParams):
    task_id: str


@dataclass
class TaskHandle:
    """What a tool call running as a task is given instead of its request: where its progress goes
    (the task's status message) and the event tasks/cancel sets."""

    cancel: anyio.Event = field(default_factory=anyio.Event)
    status_message: str = "running"

    async def report(self, progress: float, message: str) -> None:
        self.status_message = message


_CURRENT: ContextVar[TaskHandle | None] = ContextVar("rlm_mcp_task", default=None)


def current_task() -> TaskHandle | None:
    """The task the running tool call is, if it is one."""
    return _CURRENT.get()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class _Task:
    task_id: str
    owner: str
    handle: TaskHandle
    created: float = field(default_factory=time.monotonic)
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)
    status: str = "working"
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    async def run(self, call: Callable[[], Awaitable[HandlerResult]]) -> None:
        try:
            outcome = await call()
            self.result = _dump(outcome)
            self.status = "cancelled" if self.handle.cancel.is_set() else "completed"
        except MCPError as exc:
            self.status, self.error = "failed", {"code": exc.error.code, "message": exc.error.message}
        except Exception as exc:  # the call's own failure, reported as the spec's JSON-RPC internal error
            log.exception("a run_code task failed")
            self.status, self.error = "failed", {"code": -32603, "message": f"internal error: {exc}"}
        finally:
            self.updated_at = _now()
            self.done.set()

    def wire(self, result_type: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "taskId": self.task_id,
            "status": self.status,
            "statusMessage": self.handle.status_message if self.status == "working" else self.status,
            "createdAt": self.created_at,
            "lastUpdatedAt": self.updated_at if self.status != "working" else _now(),
            "ttlMs": int(TASK_TTL_S * 1000),
            "pollIntervalMs": POLL_INTERVAL_MS,
        }
        if result_type is not None:
            data["resultType"] = result_type
        if self.status in ("completed", "cancelled") and self.result is not None:
            data["result"] = self.result
        if self.status == "failed" and self.error is not None:
            data["error"] = self.error
        return data


def _dump(result: HandlerResult) -> dict[str, Any]:
    if isinstance(result, BaseModel):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dict(result or {})


def _declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Declared on this request, on a wire that can carry a task handle (the 2026 revision and later)."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    extensions = capabilities.extensions if capabilities else None
    return bool(extensions) and TASKS_EXTENSION in extensions


def authorization(headers: Any) -> str:
    """The request's Authorization header, the credential a named session or a task belongs to ('' without
    one). surface/http.py BearerToken refuses a request with two; should one get here anyway, its headers joined
    name an owner no single-header request can match."""
    values = headers.getlist("authorization") if hasattr(headers, "getlist") else [headers.get("authorization", "")]
    return "\n".join(str(value) for value in values)


def _owner(ctx: ServerRequestContext[Any, Any]) -> str:
    """Whose task it is: the caller's credentials over HTTP; on stdio there is one client."""
    headers = getattr(ctx.request, "headers", None)  # the one Authorization header BearerToken checked
    return authorization(headers) if headers is not None else ""


class Tasks(Extension):
    identifier = TASKS_EXTENSION

    def __init__(self) -> None:
        self._tasks: dict[str, _Task] = {}
        self.spawn: Spawn | None = None  # the server's task group, set while it runs

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel),
            MethodBinding("tasks/update", TaskIdParams, self._update),
        ]

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        self._expire()
        if params.name not in TASK_TOOLS or self.spawn is None or not _declares_tasks(ctx):
            return await call_next(ctx)
        if len(self._tasks) >= MAX_TASKS:
            log.warning("%d tasks are held; serving this call without one", len(self._tasks))
            return await call_next(ctx)
        task = _Task(secrets.token_urlsafe(24), _owner(ctx), TaskHandle())
        self._tasks[task.task_id] = task
        token = _CURRENT.set(task.handle)  # copied into the spawned task's context
        try:
            self.spawn(lambda: task.run(lambda: call_next(ctx)))
        finally:
            _CURRENT.reset(token)
        with anyio.move_on_after(PROMOTE_AFTER_S):
            await task.done.wait()
        if task.done.is_set() and task.status == "completed":
            del self._tasks[task.task_id]
            return task.result
        return task.wire(result_type="task")

    def _find(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> _Task:
        self._expire()
        task = self._tasks.get(params.task_id)
        if task is None or not secrets.compare_digest(task.owner, _owner(ctx)):
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found (or expired)")
        return task

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        return self._find(ctx, params).wire()

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        """Stops the cell (interrupted, its state kept); the task ends `cancelled` with what it had done."""
        self._find(ctx, params).handle.cancel.set()
        return {}

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams) -> dict[str, Any]:
        self._find(ctx, params)  # run_code never asks the client for input: nothing is outstanding
        return {}

    def _expire(self) -> None:
        now = time.monotonic()
        for task_id, task in list(self._tasks.items()):
            if task.done.is_set() and now - task.created > TASK_TTL_S:
                del self._tasks[task_id]
