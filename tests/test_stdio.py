"""The server as a host launches it: the `rlm-mcp` console script over stdio, driven by the SDK client."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from rlm_mcp import __version__
from tests.conftest import load, run, text_of, value_of

pytestmark = pytest.mark.anyio


def console_script() -> str:
    beside_python = Path(sys.executable).with_name("rlm-mcp")
    found = str(beside_python) if beside_python.exists() else shutil.which("rlm-mcp")
    if found is None:
        pytest.fail("the rlm-mcp console script is not installed; run: python -m pip install -e '.[test]'")
    return found


@pytest.fixture
async def stdio_client(tmp_path: Path, data_dir: Path) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=console_script(),
        args=[
            *("--root", str(data_dir), "--workspace", str(tmp_path / "ws")),
            *("--interrupt-grace-s", "0.5", "--structured-content"),
        ],
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
    )
    async with Client(params) as client:
        yield client


async def test_stdio_session_loads_and_runs(stdio_client: Client, data_dir: Path) -> None:
    (data_dir / "log.txt").write_text("".join(f"{i} ok\n" for i in range(50_000)) + "99999 FAILED disk\n")
    tools = await stdio_client.list_tools()
    assert {tool.name for tool in tools.tools} == {"load_context", "run_code", "sub_query"}
    loaded = await load(stdio_client, path="log.txt", name="log")
    assert not loaded.is_error, text_of(loaded)
    assert await value_of(stdio_client, "[l for l in log.splitlines() if 'FAILED' in l]") == "['99999 FAILED disk']"


async def test_raw_writes_to_the_worker_fds_cannot_corrupt_the_protocol_stream(stdio_client: Client) -> None:
    forged = b'{"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": false}}\n'
    code = (
        "import os, sys\n"
        f"os.write(1, {forged!r})\n"
        f"os.write(2, {forged!r})\n"
        "sys.__stdout__.write('via sys.__stdout__\\n'); sys.__stdout__.flush()\n"
        "print('z' * 1_000_000)\n"
        "'done'"
    )
    result = await run(stdio_client, code)
    data = result.structured_content
    assert data is not None and data["result"] == "'done'"
    assert data["stdout"].startswith(forged.decode() + "via sys.__stdout__\n")
    assert data["stdout_chars"] == len(forged) + len("via sys.__stdout__\n") + 1_000_001
    assert await value_of(stdio_client, "6 * 7") == "42"  # the stream is still in step


async def test_a_segfault_over_stdio_leaves_the_server_serving(stdio_client: Client) -> None:
    result = await run(stdio_client, "import ctypes; ctypes.string_at(0)")
    assert result.structured_content is not None and result.structured_content["outcome"] == "crashed"
    assert await value_of(stdio_client, "'alive'") == "'alive'"


async def test_an_interrupted_loop_over_stdio(stdio_client: Client) -> None:
    await run(stdio_client, "n = 0")
    result = await run(stdio_client, "while True:\n    n += 1", timeout_s=0.3)
    assert result.structured_content is not None and result.structured_content["outcome"] == "interrupted"
    assert int(await value_of(stdio_client, "n")) > 0


def test_version_and_module_entry_point() -> None:
    version = subprocess.run([console_script(), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"rlm-mcp {__version__}"
    helped = subprocess.run([sys.executable, "-m", "rlm_mcp", "--help"], capture_output=True, text=True, check=True)
    assert "usage: rlm-mcp" in helped.stdout


def test_invalid_settings_exit_with_a_message_naming_the_variable(tmp_path: Path) -> None:
    env = {**os.environ, "RLM_MCP_TIMEOUT_S": "soon"}
    failed = subprocess.run([console_script()], capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    assert failed.returncode == 2
    assert "RLM_MCP_TIMEOUT_S" in failed.stderr and failed.stdout == ""
    failed = subprocess.run(
        [console_script(), "--root", str(tmp_path / "nope")], capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert failed.returncode == 2 and "--root" in failed.stderr and "not a directory" in failed.stderr
