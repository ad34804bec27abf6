"""The session's record: the trace tree matches the calls made, totals add up, progress arrives in order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from testkit.fakes import FakeProvider, count_tokens
from tests.conftest import load, make_settings, run, text_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def provider(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeProvider]:
    async with FakeProvider.running(answer=lambda prompt, system, model: f"ans:{prompt}") as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        yield fake


async def read_json(client: Client, uri: str) -> Any:
    contents = (await client.read_resource(uri)).contents
    return contents[0].text  # type: ignore[union-attr]


async def test_the_trace_tree_matches_the_calls_made(provider: FakeProvider, tmp_path: Path, data_dir: Path) -> None:
    async with Client(build_server(make_settings(tmp_path, data_dir, retry_base_s=0.01))) as client:
        await load(client, text="alpha beta", name="doc")
        await run(client, "answers = llm_query_batched(['one', 'two', 'three'])")
        await client.call_tool("sub_query", {"prompt": "what is it?", "context": "doc"})
        await run(client, "1 / 0")
        events = [json.loads(line) for line in (await read_json(client, "rlm://session/trace")).splitlines()]
        usage = json.loads(await read_json(client, "rlm://session/usage"))

    by_id = {event["id"]: event for event in events}
    assert all(event["v"] == 1 for event in events)
    tools = [event for event in events if event["parent"] is None]
    assert [(tool["type"], tool["name"]) for tool in sorted(tools, key=lambda e: e["id"])] == [
        ("tool", "load_context"),
        ("tool", "run_code"),
        ("tool", "sub_query"),
        ("tool", "run_code"),
    ]

    def children(event: dict[str, Any]) -> list[dict[str, Any]]:
        return sorted((e for e in events if e["parent"] == event["id"]), key=lambda e: e["id"])

    load_call, batch_call, query_call, failing_call = sorted(tools, key=lambda e: e["id"])
    assert children(load_call) == []
    (cell,) = children(batch_call)
    assert cell["type"] == "cell" and cell["depth"] == 1 and "llm_query_batched" in cell["code"]
    subs = children(cell)
    assert sorted(sub["prompt"] for sub in subs) == ["one", "three", "two"]
    assert all(
        sub["type"] == "sub_call" and sub["depth"] == 2 and sub["answer"] == f"ans:{sub['prompt']}" for sub in subs
    )
    (query_sub,) = children(query_call)
    assert query_sub["type"] == "sub_call" and "alpha beta" in query_sub["prompt"]
    (failing_cell,) = children(failing_call)
    assert failing_cell["outcome"] == "error" and "ZeroDivisionError" in failing_cell["error"]
    assert by_id[cell["parent"]] is batch_call

    # Totals add up: per call -> per model -> session, and match what the provider counted.
    sub_calls = [e for e in events if e["type"] == "sub_call"]
    assert usage["total"]["calls"] == len(sub_calls) == provider.count == 4
    assert usage["total"]["input_tokens"] == sum(e["input_tokens"] for e in sub_calls)
    assert usage["total"]["output_tokens"] == sum(e["output_tokens"] for e in sub_calls)
    assert sum(model["calls"] for model in usage["by_model"].values()) == 4
    expected_out = sum(count_tokens(f"ans:{p}") for p in ("one", "two", "three")) + query_sub["output_tokens"]
    assert usage["total"]["output_tokens"] == expected_out


async def test_progress_arrives_in_order_during_a_long_cell(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    provider.latency = 0.2  # 40 calls at 16 in flight: three waves, 0.6 s
    seen: list[tuple[float, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, message))

    settings = make_settings(tmp_path, data_dir, progress_interval_s=0.2)
    async with Client(build_server(settings)) as client:
        code = "import time\ntime.sleep(0.9)\nr = llm_query_batched([f'p{i}' for i in range(40)])\ntime.sleep(0.5)"
        result = await client.call_tool("run_code", {"code": code}, progress_callback=on_progress)
        assert not result.is_error, text_of(result)
    values = [value for value, _ in seen]
    assert values == sorted(values) and len(set(values)) == len(values)  # strictly increasing
    messages = [message or "" for _, message in seen]
    assert sum("running for" in message for message in messages) >= 3  # heartbeats before and after the batch
    batch = [message for message in messages if message.startswith("sub-calls")]
    assert batch and batch[-1] == "sub-calls: 40 of 40 done in this batch"
    assert 1 < len(batch) < 40  # spaced out, not one per call


async def test_session_info_is_a_readable_resource(tmp_path: Path, data_dir: Path) -> None:
    settings = make_settings(tmp_path, data_dir, max_sub_calls=7)
    async with Client(build_server(settings)) as client:
        await load(client, text="hello", name="greeting")
        await run(client, "counts = {'a': 1}")
        uris = {str(resource.uri) for resource in (await client.list_resources()).resources}
        assert {"rlm://session/trace", "rlm://session/usage", "rlm://session/info", "rlm://sandbox"} <= uris
        info = json.loads(await read_json(client, "rlm://session/info"))
        assert [c["name"] for c in info["contexts"]] == ["greeting"]
        assert [v["name"] for v in info["variables"]] == ["counts"]
        assert info["budget_left"]["sub_calls"] == 7 and info["sandbox"].startswith("sandbox:")
        # The same, by the session's handle (how HTTP clients name their session)
        handle = info["session"]
        by_handle = json.loads(await read_json(client, f"rlm://sessions/{handle}/info"))
        assert by_handle["variables"] == info["variables"]


def test_a_resumed_trace_numbers_on_past_its_largest_id(tmp_path: Path) -> None:
    from rlm_mcp.trace import Tracer

    path = tmp_path / "session" / "trace.jsonl"
    first = Tracer(path)
    with first.event("tool", "run_code"), first.event("cell", "cell 1"), first.event("sub_call", "model"):
        pass
    again = Tracer(path)  # a resumed session: its parent's line (the smallest id) was written last
    with again.event("tool", "load_context"):
        pass
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [3, 2, 1, 4]
