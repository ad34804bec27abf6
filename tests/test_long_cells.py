"""Cells that outlive a host's patience: `running` after wait_s, the result with a later call, explicit
stops, client disconnects, and the MCP Tasks extension for clients that declare it."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import anyio
import mcp_types
import pytest
from mcp import Client
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from pydantic import TypeAdapter

from rlm_mcp.surface.server import build_server
from rlm_mcp.surface.tasks import TASKS_EXTENSION
from testkit.fakes import FakeProvider
from tests.conftest import load, make_settings, run, text_of
from tests.test_http import call, connect
from tests.test_stdio import console_script

pytestmark = pytest.mark.anyio

SLOW_CELL = "import time, sys\nprint('started'); sys.stdout.flush()\ntime.sleep(2)\nfound = 7\nprint('finished')"


@pytest.fixture
async def client(tmp_path: Path, data_dir: Path) -> AsyncIterator[Client]:
    async with Client(build_server(make_settings(tmp_path, data_dir, structured_content=False))) as connected:
        yield connected


async def test_a_cell_past_wait_s_answers_running_and_the_next_call_gets_its_result(client: Client) -> None:
    first = await run(client, SLOW_CELL, wait_s=0.5)
    text = text_of(first)
    assert not first.is_error
    assert "cell 1 running for" in text and "run_code() without code waits" in text
    assert "started" in text and "finished" not in text  # what it printed so far
    waited = await client.call_tool("run_code", {})
    assert "finished" in text_of(waited) and "found (int) = 7" in text_of(waited) and "[ok," in text_of(waited)
    assert "Out: 7" in text_of(await run(client, "found"))  # the cell's state is the session's


async def test_calls_wait_for_a_running_cell_up_to_wait_s_and_are_then_refused(tmp_path: Path, data_dir: Path) -> None:
    (data_dir / "notes.txt").write_text("some notes")
    settings = make_settings(tmp_path, data_dir, structured_content=False, wait_s=0.3)
    async with Client(build_server(settings)) as client:
        await run(client, "import time\ntime.sleep(0.8)\nfirst = 1")
        queued = await run(client, "first + 1", wait_s=2)  # the first cell ends within this call's wait: queued
        assert text_of(queued).startswith("Cell 1 finished after its call returned:") and "Out: 2" in text_of(queued)

        await run(client, "import time\ntime.sleep(1.5)\ndone = True")
        for refused in (await run(client, "1 + 1"), await load(client, path=str(data_dir / "notes.txt"))):
            assert refused.is_error
            assert "cell 3 running" in text_of(refused) and "interrupt=True" in text_of(refused)
        await anyio.sleep(1.6)
        later = await run(client, "done")  # the finished cell comes first, then this one's result
        assert text_of(later).startswith("Cell 3 finished after its call returned:")
        assert "Out: True" in text_of(later)
        assert "no cell is running" in text_of(await client.call_tool("run_code", {}))  # each result given once


def test_a_cancelled_call_stops_its_cell_and_the_next_call_says_so(tmp_path: Path, data_dir: Path) -> None:
    """notifications/cancelled (stdio, as hosts on 2025 protocol versions send it) is an explicit stop."""
    server = subprocess.Popen(
        [console_script(), "--root", str(data_dir), "--workspace", str(tmp_path / "ws"), "--structured-content"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    replies: queue.Queue[dict[str, Any]] = queue.Queue()
    threading.Thread(
        target=lambda: [replies.put(json.loads(line)) for line in server.stdout or ()], daemon=True
    ).start()

    def send(message: dict[str, Any]) -> None:
        assert server.stdin is not None
        server.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
        server.stdin.flush()

    def reply_to(request_id: int) -> dict[str, Any]:
        while (message := replies.get(timeout=20)).get("id") != request_id:
            pass
        return message["result"]

    try:
        client = {"name": "raw", "version": "0"}
        send(
            {
                "id": 1,
                "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": client},
            }
        )
        assert reply_to(1)["protocolVersion"] == "2025-06-18"
        send({"method": "notifications/initialized"})
        send(
            {
                "id": 2,
                "method": "tools/call",
                "params": {"name": "run_code", "arguments": {"code": "ticks = 0\nwhile True:\n    ticks += 1"}},
            }
        )
        time.sleep(1.5)
        send({"method": "notifications/cancelled", "params": {"requestId": 2, "reason": "the user pressed Esc"}})
        time.sleep(0.2)
        send({"id": 3, "method": "tools/call", "params": {"name": "run_code", "arguments": {"code": "ticks > 0"}}})
        after = reply_to(3)
        assert after["structuredContent"]["result"] == "True"
        assert after["structuredContent"]["finished_cell"]["outcome"] == "interrupted"
        assert after["content"][0]["text"].startswith("Cell 1 finished after its call returned:")
    finally:
        server.terminate()
        server.wait(10)


async def test_interrupt_stops_the_running_cell_and_keeps_the_state(client: Client) -> None:
    await run(client, "ticks = 0")
    assert "running" in text_of(await run(client, "while True:\n    ticks += 1", wait_s=0.3))
    stopped = await client.call_tool("run_code", {"interrupt": True})
    assert "[interrupted, state kept" in text_of(stopped) and "KeyboardInterrupt" in text_of(stopped)
    assert "Out: True" in text_of(await run(client, "ticks > 0"))


async def test_running_reports_the_sub_calls_done_so_far(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeProvider.running() as provider:
        provider.latency = 0.4
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", provider.base_url)
        settings = make_settings(tmp_path, data_dir, structured_content=False, max_concurrency=1, retry_base_s=0.01)
        async with Client(build_server(settings)) as client:
            code = "print('batch next')\nanswers = llm_query_batched([f'q{i}' for i in range(10)])"
            answer = text_of(await run(client, code, wait_s=0.5))
            assert "batch next" in answer  # flushed before the sub-calls went out
            seen: list[str] = []
            while "cell 1 running" in answer:
                seen.append(answer)
                answer = text_of(await client.call_tool("run_code", {"wait_s": 0.5}))
            assert any("sub-calls done" in text and "of 10 in the current batch" in text for text in seen), seen
            assert "Sub-calls: 10 calls, 0 failed" in answer


async def test_bad_wait_arguments_are_refused_with_the_range(client: Client) -> None:
    for arguments in ({"code": "1", "wait_s": -1}, {"code": "1", "wait_s": 10_000}):
        refused = await client.call_tool("run_code", arguments)
        assert refused.is_error and "wait_s must be from 0 to 600" in text_of(refused)
    both = await client.call_tool("run_code", {"code": "1", "interrupt": True})
    assert both.is_error and "without code" in text_of(both)


# -- over HTTP: an abandoned call leaves its cell running -------------------------------------------


async def test_a_call_abandoned_over_http_leaves_its_cell_running(http_server: str) -> None:
    """On the 2026 HTTP wire a client cancels by closing the stream, which a dropped connection also does:
    the cell goes on (to its time limit, or run_code(interrupt=True)) and its result waits."""
    async with connect(http_server) as client:
        handle = (await call(client, "run_code", {"code": "x = 1"}))["session"]
        with anyio.move_on_after(0.7):
            await client.call_tool("run_code", {"code": "import time\ntime.sleep(2)\nx = 2", "session": handle})
        data = await call(client, "run_code", {"code": "x", "session": handle})  # queued behind the cell
        assert data["result"] == "2"  # the abandoned cell ran to its end
        assert data["finished_cell"]["cell"] == 2 and data["finished_cell"]["outcome"] == "ok"


# -- the MCP Tasks extension ----------------------------------------------------------------------


class CreatedTask(mcp_types.Result):
    result_type: Literal["task"]
    task_id: str
    status: str


class TasksClient(ClientExtension):
    """A client side of io.modelcontextprotocol/tasks: polls tasks/get until the task is done."""

    identifier = TASKS_EXTENSION

    def __init__(self) -> None:
        self.created: list[CreatedTask] = []
        self.polls: list[dict[str, Any]] = []
        self.cancel_after_polls: int | None = None

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=self.resolve)]

    async def request(self, session: Any, method: str, task_id: str) -> dict[str, Any]:
        if method == "tasks/get":
            request: Any = mcp_types.GetTaskRequest(params=mcp_types.GetTaskRequestParams(task_id=task_id))
        else:
            request = mcp_types.CancelTaskRequest(params=mcp_types.CancelTaskRequestParams(task_id=task_id))
        return await session.send_request(request, TypeAdapter(dict[str, Any]))

    async def resolve(self, created: CreatedTask, ctx: ClaimContext) -> mcp_types.CallToolResult:
        self.created.append(created)
        while True:
            await anyio.sleep(0.2)
            task = await self.request(ctx.session, "tasks/get", created.task_id)
            self.polls.append(task)
            if task["status"] in ("completed", "cancelled"):
                return mcp_types.CallToolResult.model_validate(task["result"])
            assert task["status"] == "working", task
            if self.cancel_after_polls is not None and len(self.polls) == self.cancel_after_polls:
                acknowledged = await self.request(ctx.session, "tasks/cancel", created.task_id)
                assert acknowledged["resultType"] == "complete"


async def test_a_client_that_declares_tasks_polls_a_long_cell_to_its_end(tmp_path: Path, data_dir: Path) -> None:
    tasks = TasksClient()
    settings = make_settings(tmp_path, data_dir, structured_content=False, wait_s=0.5)
    async with Client(build_server(settings), extensions=[tasks]) as client:
        quick = await run(client, "1 + 1")
        assert "Out: 2" in text_of(quick) and not tasks.created  # a quick cell is answered directly
        result = await run(client, "import time\ntime.sleep(2.5)\n'slept'")
        assert "Out: 'slept'" in text_of(result)  # no `running` at wait_s: the client polls instead
        assert len(tasks.created) == 1 and tasks.polls[0]["status"] == "working"
        assert tasks.polls[-1]["status"] == "completed" and "pollIntervalMs" in tasks.polls[-1]
        with pytest.raises(Exception, match="not found"):
            await tasks.request(client.session, "tasks/get", "not-a-task")


async def test_tasks_cancel_interrupts_the_cell(tmp_path: Path, data_dir: Path) -> None:
    tasks = TasksClient()
    tasks.cancel_after_polls = 2
    async with Client(
        build_server(make_settings(tmp_path, data_dir, structured_content=False)), extensions=[tasks]
    ) as client:
        await run(client, "ticks = 0")
        result = await run(client, "while True:\n    ticks += 1")
        assert "[interrupted, state kept" in text_of(result)
        assert tasks.polls[-1]["status"] == "cancelled"
        assert "Out: True" in text_of(await run(client, "ticks > 0"))


async def test_a_client_without_the_extension_gets_running(tmp_path: Path, data_dir: Path) -> None:
    async with Client(build_server(make_settings(tmp_path, data_dir, structured_content=False))) as client:
        first = await run(client, "import time\ntime.sleep(1.5)", wait_s=0.3)
        assert "cell 1 running" in text_of(first)
