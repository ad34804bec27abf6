"""The HTTP guard (rlm_mcp/surface/http.py), driven in memory as ASGI: no port, no uvicorn.

A REPL server reachable without a token is code execution for anyone who can reach it: the bearer check,
the one-Authorization-header rule and the Host/Origin checks built from the settings are what stand in
the way, so each is exercised with real requests against the real app.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from rlm_mcp.errors import SettingsError
from rlm_mcp.surface.http import PATH, BearerToken, bearer_token, build_app, check_http_settings
from tests.conftest import make_settings

TOKEN = "unit-test-token"
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "unit", "version": "1"}},
}
JSON_HEADERS = [("content-type", "application/json"), ("accept", "application/json, text/event-stream")]

Headers = list[tuple[str, str]]


def http_scope(headers: Headers, path: str = PATH) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(name.encode(), value.encode()) for name, value in headers],
        "client": ("127.0.0.1", 50_000),
        "server": ("127.0.0.1", 8_000),
    }


async def request(app: Any, headers: Headers) -> tuple[int, dict[str, str], bytes]:
    """One POST of `initialize` through the ASGI app: its status, headers and body."""
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await anyio.sleep_forever()
        delivered = True
        return {"type": "http.request", "body": json.dumps(INIT).encode(), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with anyio.fail_after(10):
        await app(http_scope(headers), receive, send)
    start = next(message for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


class Downstream:
    """The app behind the guard: records what reached it and answers 200."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"served"})


@asynccontextmanager
async def running(app: Any) -> AsyncIterator[Any]:
    """The app with its ASGI lifespan started (the SDK's session manager runs in it), shut down after."""
    to_app, from_test = anyio.create_memory_object_stream[dict[str, Any]](4)
    events: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        events.append(message)

    async with anyio.create_task_group() as group:
        group.start_soon(app, {"type": "lifespan", "asgi": {"version": "3.0"}}, from_test.receive, send)
        await to_app.send({"type": "lifespan.startup"})
        with anyio.fail_after(10):
            while not events:
                await anyio.sleep(0.01)
        assert events[0]["type"] == "lifespan.startup.complete", events
        try:
            yield app
        finally:
            await to_app.send({"type": "lifespan.shutdown"})
            with anyio.fail_after(10):
                while len(events) < 2:
                    await anyio.sleep(0.01)


def settings_for(tmp_path: Path, **overrides: Any) -> Any:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    return make_settings(tmp_path, data, transport="http", **overrides)


# -- BearerToken on its own ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_right_token_passes_and_anything_else_is_401() -> None:
    downstream = Downstream()
    guard = BearerToken(downstream, TOKEN)
    assert (await request(guard, [("authorization", f"Bearer {TOKEN}")]))[0] == 200
    for given in ([], [("authorization", "Bearer wrong")], [("authorization", TOKEN)], [("authorization", "")]):
        status, headers, body = await request(guard, given)
        assert (status, headers.get("www-authenticate"), body) == (401, "Bearer", b"missing or wrong bearer token")
    assert len(downstream.calls) == 1, "a refused request never reaches the server"


@pytest.mark.anyio
async def test_two_authorization_headers_are_refused_whichever_holds_the_token() -> None:
    """The check and the owner lookup (tasks.authorization) must read the same header: two is refused."""
    right, wrong = ("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer wrong")
    for token in (TOKEN, None):  # even with --no-auth: the header still names a named session's owner
        downstream = Downstream()
        for pair in ([right, wrong], [wrong, right], [right, right]):
            status, _, body = await request(BearerToken(downstream, token), pair)
            assert (status, body) == (400, b"more than one Authorization header"), (token, pair)
        assert downstream.calls == []


@pytest.mark.anyio
async def test_the_header_name_is_matched_in_any_case() -> None:
    status, _, _ = await request(BearerToken(Downstream(), TOKEN), [("Authorization", f"Bearer {TOKEN}")])
    assert status == 200
    status, _, _ = await request(
        BearerToken(Downstream(), TOKEN), [("AUTHORIZATION", "Bearer x"), ("authorization", f"Bearer {TOKEN}")]
    )
    assert status == 400


@pytest.mark.anyio
async def test_without_a_token_one_header_or_none_passes() -> None:
    downstream = Downstream()
    assert (await request(BearerToken(downstream, None), []))[0] == 200
    assert (await request(BearerToken(downstream, None), [("authorization", "Bearer anything")]))[0] == 200
    assert len(downstream.calls) == 2


@pytest.mark.anyio
async def test_non_http_scopes_pass_through() -> None:
    downstream = Downstream()
    scope = {"type": "lifespan"}
    await BearerToken(downstream, TOKEN)(scope, None, None)
    assert downstream.calls == [scope]


# -- the settings' checks and the token ----------------------------------------------------------------------


def test_beyond_loopback_a_token_is_required(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"refusing to listen on 0\.0\.0\.0 without a token"):
        check_http_settings(settings_for(tmp_path, host="0.0.0.0"))
    with pytest.raises(SettingsError):
        build_app(settings_for(tmp_path, host="192.0.2.7"))
    check_http_settings(settings_for(tmp_path, host="0.0.0.0", auth_token=TOKEN))
    for host in ("127.0.0.1", "localhost", "::1"):
        check_http_settings(settings_for(tmp_path, host=host))


def test_the_token_is_the_operators_or_none_with_no_auth_or_minted_and_printed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bearer_token(settings_for(tmp_path, auth_token=TOKEN)) == TOKEN
    assert bearer_token(settings_for(tmp_path, no_auth=True)) is None
    assert capsys.readouterr().err == ""
    minted = bearer_token(settings_for(tmp_path))
    again = bearer_token(settings_for(tmp_path))
    assert minted and again and minted != again and len(minted) >= 40
    printed = capsys.readouterr()
    assert f"Authorization: Bearer {minted}" in printed.err and printed.out == ""


# -- the built app: the guard in front, the Host and Origin checks behind it -------------------------------


@pytest.mark.anyio
async def test_the_built_app_checks_the_token_first(tmp_path: Path) -> None:
    app = build_app(settings_for(tmp_path, auth_token=TOKEN))
    assert isinstance(app, BearerToken) and app.expected == f"Bearer {TOKEN}".encode()
    async with running(app):
        host = [("host", "127.0.0.1:8000")]
        assert (await request(app, [*JSON_HEADERS, *host]))[0] == 401
        assert (await request(app, [*JSON_HEADERS, *host, ("authorization", f"Bearer {TOKEN}")]))[0] == 200


@pytest.mark.anyio
async def test_the_host_check_admits_the_listening_host_and_loopback_only(tmp_path: Path) -> None:
    """DNS rebinding: a page on evil.example that resolves to us must be answered 421 (Host) or 403 (Origin)."""
    app = build_app(settings_for(tmp_path, host="192.0.2.7", auth_token=TOKEN))
    base = [*JSON_HEADERS, ("authorization", f"Bearer {TOKEN}")]
    async with running(app):
        for host in ("192.0.2.7:8000", "127.0.0.1:9", "localhost:8000", "[::1]:8000"):
            assert (await request(app, [*base, ("host", host)]))[0] == 200, host
        for host in ("evil.example:80", "192.0.2.8:8000", "::1", "127.0.0.1.evil.example:80"):
            status, _, body = await request(app, [*base, ("host", host)])
            assert (status, body) == (421, b"Invalid Host header"), host
        ok_host = ("host", "127.0.0.1:8000")
        assert (await request(app, [*base, ok_host, ("origin", "http://192.0.2.7:5173")]))[0] == 200
        assert (await request(app, [*base, ok_host, ("origin", "http://[::1]:5173")]))[0] == 200
        status, _, _ = await request(app, [*base, ok_host, ("origin", "http://evil.example")])
        assert status == 403


@pytest.mark.anyio
async def test_an_ipv6_listening_host_is_bracketed(tmp_path: Path) -> None:
    app = build_app(settings_for(tmp_path, host="::1", auth_token=TOKEN))
    base = [*JSON_HEADERS, ("authorization", f"Bearer {TOKEN}")]
    async with running(app):
        assert (await request(app, [*base, ("host", "[::1]:8000")]))[0] == 200
        assert (await request(app, [*base, ("host", "::1:8000")]))[0] == 421
