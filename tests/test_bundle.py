"""The MCP bundle (bundle/, a .mcpb for Claude Desktop): valid, packable, current, and it really serves."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from rlm_mcp import __version__
from rlm_mcp.surface.server import build_server
from testkit.clis import MCPB_VERSION, find_npm_cli
from tests.conftest import make_settings

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
MANIFEST = json.loads((BUNDLE / "manifest.json").read_text())
MCPB = find_npm_cli("mcpb", "RLM_MCP_TEST_MCPB")
needs_mcpb = pytest.mark.skipif(
    MCPB is None,
    reason=f"the MCP bundle CLI (npm @anthropic-ai/mcpb@{MCPB_VERSION}) is not installed: .ci/run installs it",
)


@needs_mcpb
def test_the_manifest_validates_and_packs_into_a_small_bundle(tmp_path: Path) -> None:
    assert MCPB is not None
    checked = subprocess.run([MCPB, "validate", str(BUNDLE / "manifest.json")], capture_output=True, text=True)
    assert checked.returncode == 0 and "validation passes" in checked.stdout, checked.stdout + checked.stderr
    packed = tmp_path / "rlm-mcp.mcpb"
    done = subprocess.run([MCPB, "pack", str(BUNDLE), str(packed)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(zipfile.ZipFile(packed).namelist()) == ["manifest.json", "pyproject.toml", "src/server.py"]


@pytest.mark.anyio
async def test_the_manifest_lists_what_the_server_serves(tmp_path: Path, data_dir: Path) -> None:
    assert MANIFEST["version"] == __version__
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11 on")
    dependencies = tomllib.loads((BUNDLE / "pyproject.toml").read_text())["project"]["dependencies"]
    assert dependencies == [f"rlm-mcp[sandbox,docs]=={__version__}"]
    async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
        tools = {tool.name: tool.description for tool in (await client.list_tools()).tools}
        prompts = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
    assert {tool["name"]: tool["description"] for tool in MANIFEST["tools"]} == tools
    assert {prompt["name"] for prompt in MANIFEST["prompts"]} == set(prompts)
    assert MANIFEST["prompts"][0]["arguments"] == [argument.name for argument in prompts["analyze"].arguments or []]


@pytest.mark.anyio
async def test_the_bundle_entry_point_serves_over_stdio_as_the_manifest_launches_it(tmp_path: Path) -> None:
    """The host runs `uv run --directory BUNDLE src/server.py ARGS`; here the same file and arguments, with
    the test's Python in place of uv's environment."""
    config = MANIFEST["server"]["mcp_config"]
    args = config["args"][config["args"].index("src/server.py") + 1 :]
    root = tmp_path / "picked"
    root.mkdir()
    (root / "notes.txt").write_text("hello from the picked directory")
    args = [arg.replace("${user_config.root}", str(root)) for arg in args]
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(BUNDLE / "src" / "server.py"), *args, "--workspace", str(tmp_path / "ws")],
        cwd=str(BUNDLE),
    )
    async with Client(params) as client:
        loaded = await client.call_tool("load_context", {"path": "notes.txt"})
    assert not loaded.is_error and "hello from the picked directory" in loaded.content[0].text  # type: ignore[union-attr]
