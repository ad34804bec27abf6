"""The MCP Tasks extension's pieces (rlm_mcp/surface/tasks.py) that need no server: the owner of a task, a
task's run and its wire form, and the lookup that keeps one client out of another's task."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult, TextContent
from starlette.datastructures import Headers

from rlm_mcp.surface.tasks import (
    POLL_INTERVAL_MS,
    TASK_TTL_S,
    TaskHandle,
    TaskIdParams,
    Tasks,
    _Task,
    authorization,
    current_task,
)


def headers(*values: str) -> Headers:
    return Headers(raw=[(b"authorization", value.encode()) for value in values])


def context(*values: str) -> Any:
    """What the extension reads of a request's context: the HTTP request's headers (None on stdio)."""
    return SimpleNamespace(request=SimpleNamespace(headers=headers(*values)) if values else None)


def test_the_owner_is_the_authorization_header() -> None:
    assert authorization(headers("Bearer one")) == "Bearer one"
    assert authorization(headers()) == ""
    assert authorization({"authorization": "Bearer dict"}) == "Bearer dict"
    assert authorization({}) == ""


def test_two_headers_name_an_owner_no_single_header_matches() -> None:
    """BearerToken refuses two; should a request with two get here anyway, it owns nobody else's task."""
    joined = authorization(headers("Bearer one", "Bearer two"))
    assert joined not in ("Bearer one", "Bearer two", "")
    assert "Bearer one" in joined and "Bearer two" in joined


def test_outside_a_task_there_is_no_current_task() -> None:
    assert current_task() is None


@pytest.mark.anyio
async def test_a_task_reports_progress_and_ends_completed_with_its_result() -> None:
    task = _Task("id1", "owner", TaskHandle())
    await task.handle.report(0.5, "half way")
    working = task.wire(result_type="task")
    assert (working["status"], working["statusMessage"], working["resultType"]) == ("working", "half way", "task")
    assert working["ttlMs"] == int(TASK_TTL_S * 1000) and working["pollIntervalMs"] == POLL_INTERVAL_MS
    assert "result" not in working and "error" not in working

    async def call() -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text="done")])

    await task.run(call)
    done = task.wire()
    assert task.done.is_set() and done["status"] == "completed" and done["statusMessage"] == "completed"
    assert done["result"]["content"] == [{"type": "text", "text": "done"}]
    assert "resultType" not in done


@pytest.mark.anyio
async def test_a_cancelled_task_keeps_what_it_had_done() -> None:
    task = _Task("id2", "owner", TaskHandle())
    task.handle.cancel.set()
    await task.run(lambda: _answer({"content": []}))
    assert task.wire()["status"] == "cancelled" and task.wire()["result"] == {"content": []}


async def _answer(value: dict[str, Any]) -> dict[str, Any]:
    return value


@pytest.mark.anyio
async def test_a_failing_call_fails_the_task_with_a_json_rpc_error() -> None:
    async def refused() -> Any:
        raise MCPError(code=INVALID_PARAMS, message="bad arguments")

    async def broken() -> Any:
        raise RuntimeError("boom")

    first, second = _Task("a", "o", TaskHandle()), _Task("b", "o", TaskHandle())
    await first.run(refused)
    await second.run(broken)
    assert first.wire()["error"] == {"code": INVALID_PARAMS, "message": "bad arguments"}
    assert second.wire()["error"] == {"code": -32603, "message": "internal error: boom"}
    assert first.status == second.status == "failed" and "result" not in second.wire()


@pytest.mark.anyio
async def test_a_task_is_found_only_by_its_owner() -> None:
    tasks = Tasks()
    task = _Task("t1", "Bearer mine", TaskHandle())
    tasks._tasks[task.task_id] = task
    assert (await tasks._get(context("Bearer mine"), TaskIdParams(task_id="t1")))["taskId"] == "t1"
    for stranger in (context("Bearer yours"), context(), context("Bearer mine", "Bearer mine")):
        with pytest.raises(MCPError, match="Task not found"):
            await tasks._get(stranger, TaskIdParams(task_id="t1"))
        with pytest.raises(MCPError, match="Task not found"):
            await tasks._cancel(stranger, TaskIdParams(task_id="t1"))
    assert not task.handle.cancel.is_set()
    with pytest.raises(MCPError, match="Task not found"):
        await tasks._get(context("Bearer mine"), TaskIdParams(task_id="t2"))
    assert await tasks._cancel(context("Bearer mine"), TaskIdParams(task_id="t1")) == {}
    assert task.handle.cancel.is_set()


@pytest.mark.anyio
async def test_finished_tasks_expire_after_their_ttl_and_running_ones_do_not() -> None:
    tasks = Tasks()
    old = time.monotonic() - TASK_TTL_S - 1
    finished, running = _Task("f", "", TaskHandle(), created=old), _Task("r", "", TaskHandle(), created=old)
    finished.done.set()
    tasks._tasks.update({"f": finished, "r": running})
    with anyio.fail_after(5):
        with pytest.raises(MCPError):
            await tasks._get(context(), TaskIdParams(task_id="f"))
        assert (await tasks._get(context(), TaskIdParams(task_id="r")))["status"] == "working"
    assert list(tasks._tasks) == ["r"]


def test_the_extension_serves_the_three_task_methods() -> None:
    assert sorted(binding.method for binding in Tasks().methods()) == ["tasks/cancel", "tasks/get", "tasks/update"]
