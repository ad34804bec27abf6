"""Each tool is declared once (rlm_mcp/tools/declarations.py), and the server, the engine, replay and the docs read it.

The server's tools/list, the root loop's tool schemas and replay's argument checks are compared with the
declaration; no other module of rlm_mcp/ may hold a declared wording, so a second copy cannot drift.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.engine import loop, prompts
from rlm_mcp.llm.types import Tool
from rlm_mcp.replay.run import ARGUMENTS, SENT_BY_REPLAY
from rlm_mcp.surface.server import build_server
from rlm_mcp.tools.declarations import REQUIRED, ROOT_TOOLS, TOOLS, ToolDeclaration
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "rlm_mcp"


async def listed_tools(tmp_path: Path) -> dict[str, Any]:
    """tools/list of a server over HTTP (where every tool keeps its `session` argument), as the client reads it."""
    data = tmp_path / "data"
    data.mkdir()
    async with Client(build_server(make_settings(tmp_path, data, transport="http"))) as client:
        listed = (await client.list_tools()).tools
    return {tool.name: tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed}


def schema_types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a property accepts besides null (pydantic writes `str | None` as anyOf)."""
    options = schema.get("anyOf", [schema])
    return {option["type"] for option in options if option.get("type") not in (None, "null")}


@pytest.mark.anyio
async def test_the_servers_tools_list_is_the_declaration(tmp_path: Path) -> None:
    listed = await listed_tools(tmp_path)
    assert list(listed) == [tool.name for tool in TOOLS]
    for tool in TOOLS:
        got = listed[tool.name]
        assert got["description"] == tool.description
        hints = {"readOnlyHint": tool.read_only, "destructiveHint": tool.destructive, "openWorldHint": tool.open_world}
        assert got.get("annotations", {}) == {key: value for key, value in hints.items() if value is not None}
        schema = got["inputSchema"]
        assert list(schema["properties"]) == [parameter.name for parameter in tool.parameters]
        assert schema.get("required", []) == [parameter.name for parameter in tool.parameters if parameter.required]
        for parameter in tool.parameters:
            published = schema["properties"][parameter.name]
            assert published["description"] == parameter.description
            assert schema_types(published) == {parameter.json_type}
            assert published.get("default", REQUIRED) == parameter.default


def test_the_engine_offers_the_declared_tools_with_their_declared_words() -> None:
    assert [tool.name for tool in ROOT_TOOLS] == ["run_code", "sub_query"]
    assert tuple(Tool(tool.name, tool.description, tool.root_schema()) for tool in ROOT_TOOLS) == prompts.TOOLS
    for tool in prompts.TOOLS:
        declared = next(declaration for declaration in TOOLS if declaration.name == tool.name)
        properties: dict[str, Any] = tool.schema["properties"]  # type: ignore[assignment]
        for name, schema in properties.items():
            assert schema == {"type": declared.parameter(name).json_type}
    assert loop.TOOLS is prompts.TOOLS  # the loop offers what the prompt module built, nothing of its own


def test_replay_sends_again_exactly_the_declared_arguments_of_their_declared_types() -> None:
    assert list(ARGUMENTS) == [tool.name for tool in TOOLS]
    for tool in TOOLS:
        kept = {parameter.name: parameter.value_types for parameter in tool.parameters}
        assert ARGUMENTS[tool.name] == {name: types for name, types in kept.items() if name not in SENT_BY_REPLAY}
    assert ARGUMENTS["run_code"]["timeout_s"] == (int, float)  # a JSON number may arrive as an int


def wordings(tool: ToolDeclaration) -> list[str]:
    return [tool.description] + [parameter.description for parameter in tool.parameters]


def string_constants(path: Path) -> list[str]:
    """Every string literal of a module, adjacent literals joined as Python joins them."""
    tree = ast.parse(path.read_text(), str(path))
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_no_other_module_holds_a_declared_wording() -> None:
    declared = [wording for tool in TOOLS for wording in wordings(tool)]
    copies = [
        f"{path.relative_to(ROOT)}: {wording!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != PACKAGE / "tools" / "declarations.py"
        for constant in string_constants(path)
        for wording in declared
        if wording in constant
    ]
    assert copies == []
    tool_building = [path for path in PACKAGE.rglob("*.py") if re.search(r"\bTool\(\s*\"", path.read_text())]
    assert tool_building == []  # no engine tool spelled out by hand


def test_the_readme_and_the_bundle_list_the_declared_tools() -> None:
    """The README's Tools table names each tool's arguments (all but `session`, explained below it); the
    bundle's manifest must copy the descriptions (a JSON file), so they are held equal here."""
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*?) \|", readme, re.MULTILINE))
    for tool in TOOLS:
        named = re.findall(r"`(\w+)", rows[tool.name])
        assert named == [parameter.name for parameter in tool.parameters if parameter.name != "session"]
    manifest = json.loads((ROOT / "bundle" / "manifest.json").read_text())
    assert {tool["name"]: tool["description"] for tool in manifest["tools"]} == {
        tool.name: tool.description for tool in TOOLS
    }
