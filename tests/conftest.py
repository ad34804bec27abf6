"""Shared fixtures: a real server built from real settings, driven by the real MCP SDK client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp_types import CallToolResult

from rlm_mcp.config import Settings, load_settings
from rlm_mcp.host.proctree import descendants
from rlm_mcp.host.worker_host import WORKER_MARKER
from rlm_mcp.surface.server import build_server
from testkit.static_http import serving


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Gigabyte cases run only when asked for (`-m slow`); by default their moderate-size twins run."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a gigabyte-scale input: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def make_settings(tmp_path: Path, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "roots": [data_dir],
        "workspace": tmp_path / "workspace",
        "timeout_s": 20,
        "interrupt_grace_s": 1.0,
        "structured_content": True,  # most tests read the result's data; test_result_format checks the default
        # A CLI the developer has installed and logged in must not decide which backend `auto` picks.
        "claude_command": "rlm-mcp-test-no-claude",
        "codex_command": "rlm-mcp-test-no-codex",
        # Distillation at close is tested in test_memory.py; elsewhere it would add two sub-calls to every count.
        "distill": "manual",
    }
    values.update(overrides)
    return load_settings(values, environ={})


@pytest.fixture
def settings(tmp_path: Path, data_dir: Path) -> Settings:
    return make_settings(tmp_path, data_dir)


@pytest.fixture
def http_server(tmp_path: Path, data_dir: Path) -> Iterator[str]:
    """A real rlm-mcp process serving HTTP on 127.0.0.1 with a bearer token (tests.test_http.TOKEN); its URL."""
    from tests.test_http import TOKEN, start_server

    process, url = start_server(tmp_path, data_dir, "--auth-token", TOKEN)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static HTTP server on 127.0.0.1 over a directory of its own (with logs/ in it): (base URL, directory)."""
    served = tmp_path / "served"
    (served / "logs").mkdir(parents=True)
    with serving(served) as base:
        yield base, served


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    async with Client(build_server(settings)) as connected:
        yield connected


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def run(client: Client, code: str, **arguments: Any) -> CallToolResult:
    return await client.call_tool("run_code", {"code": code, **arguments})


async def load(client: Client, **arguments: Any) -> CallToolResult:
    return await client.call_tool("load_context", arguments)


async def value_of(client: Client, expression: str) -> str:
    """The repr the REPL shows for `expression`; fails the test if the cell did not succeed."""
    result = await run(client, expression)
    data = result.structured_content
    assert data is not None and data["outcome"] == "ok", text_of(result)
    return data["result"]


def worker_pid(workspace: Path) -> int:
    """The pid, as this process sees it, of the REPL worker serving sessions under `workspace`.

    Inside bubblewrap's PID namespace the worker's own os.getpid() is a different, small number. The
    command line names no session (any local user can read it), so the worker is told by its directory.
    """
    for pid in sorted(descendants(os.getpid())):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if WORKER_MARKER.encode() in command and cwd.startswith(str(workspace)):
            return pid
    raise AssertionError(f"no REPL worker is running for {workspace}")
