"""build_server (rlm_mcp/surface/server.py) in memory, through the real SDK client: the declared tools, the
prompt and the resources a client lists. No tool is called, so no REPL worker starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.surface.server import PARTS, SANDBOXED, UNSANDBOXED, build_server
from rlm_mcp.tools.declarations import TOOLS
from tests.conftest import make_settings


async def listing(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    async with Client(build_server(make_settings(tmp_path, data, **overrides))) as client:
        return {
            "instructions": client.instructions or "",
            "tools": (await client.list_tools()).tools,
            "prompts": (await client.list_prompts()).prompts,
            "resources": (await client.list_resources()).resources,
            "templates": (await client.list_resource_templates()).resource_templates,
        }


@pytest.mark.anyio
async def test_stdio_lists_the_declared_tools_without_the_session_argument(tmp_path: Path) -> None:
    """On stdio there is one session: `session` is left out of what the model reads."""
    tools = {tool.name: tool for tool in (await listing(tmp_path))["tools"]}
    assert list(tools) == [tool.name for tool in TOOLS]
    for declared in TOOLS:
        schema = tools[declared.name].input_schema
        assert tools[declared.name].description == declared.description
        assert list(schema["properties"]) == [p.name for p in declared.parameters if p.name != "session"]
        assert schema.get("required", []) == [p.name for p in declared.parameters if p.required]
        assert tools[declared.name].output_schema is None, "no outputSchema: it would cost every tools/list"


@pytest.mark.anyio
async def test_the_analyze_prompt_and_the_resources(tmp_path: Path) -> None:
    listed = await listing(tmp_path)
    (prompt,) = listed["prompts"]
    assert prompt.name == "analyze"
    assert [(argument.name, argument.required) for argument in prompt.arguments] == [
        ("path", True),
        ("question", True),
    ]
    uris = sorted(str(resource.uri) for resource in listed["resources"])
    assert uris == sorted(["rlm://sandbox", "rlm://handbook", *(f"rlm://session/{part}" for part in PARTS)])
    assert [template.uri_template for template in listed["templates"]] == ["rlm://sessions/{session_id}/{name}"]


@pytest.mark.anyio
async def test_the_instructions_say_whether_the_repl_is_sandboxed(tmp_path: Path) -> None:
    sandboxed = (await listing(tmp_path / "on"))["instructions"]
    unsandboxed = (await listing(tmp_path / "off", sandbox="off"))["instructions"]
    assert sandboxed.endswith(SANDBOXED) and UNSANDBOXED not in sandboxed
    assert unsandboxed.endswith(UNSANDBOXED) and SANDBOXED not in unsandboxed
