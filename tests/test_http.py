"""rlm-mcp over streamable HTTP on 127.0.0.1: a real server process, real SDK clients, raw requests for attacks."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import text_of
from tests.test_stdio import console_script

pytestmark = pytest.mark.anyio

TOKEN = "test-token-0123456789abcdef"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    tmp_path: Path, data_dir: Path, *extra: str, env: dict[str, str] | None = None, structured: bool = True
) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    args = [console_script(), "--transport", "http", "--port", str(port), "--root", str(data_dir)]
    args += ["--workspace", str(tmp_path / "ws"), "--interrupt-grace-s", "0.5", *extra]
    args += ["--structured-content"] if structured else []
    process = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, f"http://127.0.0.1:{port}/mcp"
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stderr.read() if process.stderr else ''}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the HTTP server did not start listening within 20 s")


@pytest.fixture
def server(http_server: str, data_dir: Path) -> str:
    (data_dir / "book.txt").write_text("chapter one\n" * 100)  # the server reads its roots only when asked
    return http_server


@contextlib.asynccontextmanager
async def connect(
    url: str, token: str | None = TOKEN, headers: dict[str, str] | None = None, **options: Any
) -> AsyncIterator[Client]:
    """An SDK client over streamable HTTP; the HTTP client it is given is ours to close."""
    headers = {**({"authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), **options) as client,
    ):
        yield client


def post(url: str, body: bytes | str, **headers: str) -> httpx2.Response:
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    return httpx2.post(url, content=body, headers={**base, **headers}, timeout=10)


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    return result.structured_content or {}


async def test_a_sessionless_client_gets_a_handle_and_keeps_its_state(server: str) -> None:
    async with connect(server) as client:
        first = await client.call_tool("run_code", {"code": "x = 41"})
        handle = first.structured_content["session"]  # type: ignore[index]
        assert f"pass session={handle!r}" in text_of(first)
        data = await call(client, "run_code", {"code": "x + 1", "session": handle})
        assert data["result"] == "42"
        # without the handle a sessionless call is a new session
        other = await client.call_tool("run_code", {"code": "x"})
        assert "NameError" in text_of(other) and other.structured_content["session"] != handle  # type: ignore[index]
        bogus = await client.call_tool("run_code", {"code": "1", "session": "not-a-session-handle"})
        assert bogus.is_error and "no session 'not-a-session-handle'" in text_of(bogus)


async def test_a_legacy_client_is_keyed_by_its_mcp_session(server: str) -> None:
    async with connect(server, mode="legacy") as client:
        await call(client, "load_context", {"path": "book.txt"})
        await call(client, "run_code", {"code": "y = len(context)"})
        assert (await call(client, "run_code", {"code": "y"}))["result"] == "1200"
    async with connect(server, mode="legacy") as client:
        assert "NameError" in text_of(await client.call_tool("run_code", {"code": "y"}))


def test_bad_host_origin_token_and_body_are_refused(server: str) -> None:
    auth = {"authorization": f"Bearer {TOKEN}"}
    assert post(server, json.dumps(INIT), **auth).status_code == 200
    assert post(server, json.dumps(INIT)).status_code == 401
    assert post(server, json.dumps(INIT), authorization="Bearer wrong").status_code == 401
    assert post(server, json.dumps(INIT), host="evil.example:80", **auth).status_code == 421
    assert post(server, json.dumps(INIT), origin="http://evil.example", **auth).status_code == 403
    assert post(server, json.dumps(INIT), origin="http://127.0.0.1:5173", **auth).status_code == 200
    oversized = json.dumps({**INIT, "params": {**INIT["params"], "pad": "x" * 5_000_000}})
    assert post(server, oversized, **auth).status_code == 413


def test_listening_beyond_loopback_without_a_token_is_refused(tmp_path: Path, data_dir: Path) -> None:
    args = [console_script(), "--transport", "http", "--host", "0.0.0.0", "--port", str(free_port())]
    done = subprocess.run(
        [*args, "--root", str(data_dir), "--workspace", str(tmp_path / "ws")],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "RLM_MCP_AUTH_TOKEN"},
    )
    assert done.returncode == 2 and "refusing to listen on 0.0.0.0 without a token" in done.stderr


async def test_twenty_clients_at_once_see_only_their_own_state(server: str) -> None:
    errors: list[str] = []

    async def client_loop(number: int) -> None:
        try:
            async with connect(server) as client:
                first = await call(client, "load_context", {"text": f"client {number} text", "name": "mine"})
                handle = first["session"]
                deadline = time.monotonic() + 3
                rounds = 0
                while time.monotonic() < deadline:
                    rounds += 1
                    data = await call(client, "run_code", {"code": f"n = {number}\n(n, mine)", "session": handle})
                    if data["result"] != repr((number, f"client {number} text")):
                        errors.append(f"client {number} saw {data['result']}")
                assert rounds > 1
        except Exception as exc:  # collected, so one failure does not hide the others
            errors.append(f"client {number}: {type(exc).__name__}: {exc}")

    async with anyio.create_task_group() as group:
        for number in range(20):
            group.start_soon(client_loop, number)
    assert errors == []


async def test_only_http_tools_take_a_session_handle(server: str) -> None:
    async with connect(server) as client:
        tools = (await client.list_tools()).tools
    assert all("session" in tool.input_schema["properties"] for tool in tools)


async def test_a_session_named_in_a_header_keeps_state_without_handles_or_mcp_sessions(server: str) -> None:
    async with connect(server, headers={"x-rlm-session": "work"}) as client:
        await call(client, "run_code", {"code": "x = 41"})
    async with connect(server, headers={"x-rlm-session": "work"}) as again:  # a new connection, no handle
        assert (await call(again, "run_code", {"code": "x + 1"}))["result"] == "42"
    async with connect(server, headers={"x-rlm-session": "other"}) as other:
        assert "NameError" in text_of(await other.call_tool("run_code", {"code": "x"}))


async def test_a_session_started_on_one_replica_resumes_on_another_sharing_the_workspace(
    tmp_path: Path, data_dir: Path
) -> None:
    """Two HTTP servers over one workspace (a shared disk, as replicas behind a load balancer would mount
    it): the first dies, the handle goes to the second, which brings the session back from the signed
    record: its context reloaded, its variables restored."""
    (data_dir / "book.txt").write_text("chapter one\n" * 100)
    first, first_url = start_server(tmp_path, data_dir, "--auth-token", TOKEN)
    try:
        async with connect(first_url) as client:
            loaded = await call(client, "load_context", {"path": "book.txt"})
            handle = loaded["session"]
            await call(client, "run_code", {"code": "x = 41", "session": handle})
    finally:
        first.terminate()
        first.wait(10)
    second, second_url = start_server(tmp_path, data_dir, "--auth-token", TOKEN)
    try:
        async with connect(second_url) as client:
            data = await call(client, "run_code", {"code": "x + 1, len(context)", "session": handle})
            assert data["result"] == "(42, 1200)"
            assert data["session"] == handle
    finally:
        second.terminate()
        second.wait(10)


def test_two_authorization_headers_are_refused_whichever_comes_first(server: str) -> None:
    """The token check and the owner of a named session or task must read the same header: a request that
    carries two (the right token in either place) is refused, not checked by one and keyed by the other."""
    base = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    for pair in (("Bearer wrong", f"Bearer {TOKEN}"), (f"Bearer {TOKEN}", "Bearer wrong")):
        headers = [*base.items(), *(("authorization", value) for value in pair)]
        response = httpx2.post(server, content=json.dumps(INIT), headers=headers, timeout=10)
        assert response.status_code in (400, 401), (pair, response.status_code, response.text)
    twice = [*base.items(), ("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")]
    assert httpx2.post(server, content=json.dumps(INIT), headers=twice, timeout=10).status_code == 400
