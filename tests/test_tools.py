"""The tool list as a client sees it: names, schemas, wording, and what it costs the model per turn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


async def test_the_tools_and_their_input_schemas(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {"load_context", "run_code", "sub_query"}

    load = tools["load_context"].input_schema
    assert set(load["properties"]) == {"path", "text", "name", "exclude"}
    assert load["properties"]["name"]["default"] == "context"
    assert not load.get("required")

    run = tools["run_code"].input_schema
    assert set(run["properties"]) == {"code", "timeout_s", "wait_s", "interrupt", "max_output_chars"}  # no `session`
    assert not run.get("required")  # without code: wait for the running cell

    sub = tools["sub_query"].input_schema
    assert set(sub["properties"]) == {"prompt", "context", "model", "max_tokens"}
    assert sub["required"] == ["prompt"]

    for tool in tools.values():
        assert tool.output_schema is None  # by design: results carry structuredContent, schemas would cost tokens
        assert 50 < len(tool.description or "") <= 300


async def test_tools_list_stays_small(client: Client) -> None:
    tools = (await client.list_tools()).tools
    size = len(json.dumps([tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]))
    assert size <= 4_000, f"tools/list is {size} characters; every one costs the root model tokens on every turn"


async def test_instructions_teach_the_rlm_way_of_working(client: Client) -> None:
    instructions = client.instructions or ""
    for phrase in ("load_context", "run_code", "persist", "Print only what you need", "llm_query_batched", "combine"):
        assert phrase in instructions
    assert len(instructions) < 1_000


def test_a_root_of_slash_or_home_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    build_server(make_settings(tmp_path, tmp_path))
    assert "reads everything" not in caplog.text and "read everything" not in caplog.text
    build_server(make_settings(tmp_path, Path("/")))
    assert "root / lets load_context and REPL code read everything under it" in caplog.text


async def test_the_analyze_prompt_spells_out_the_rlm_method(client: Client) -> None:
    (prompt,) = (await client.list_prompts()).prompts
    assert prompt.name == "analyze" and {argument.name for argument in prompt.arguments or []} == {"path", "question"}
    got = await client.get_prompt("analyze", {"path": "logs/*.log", "question": "Which errors recur?"})
    text = got.messages[0].content.text  # type: ignore[union-attr]
    assert "logs/*.log" in text and "Which errors recur?" in text
    for step in ("load_context(path='logs/*.log')", "llm_query_batched", "grep"):
        assert step in text
