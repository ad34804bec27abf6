"""The registry of what the worker asks the server: routed by op, every request answered."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest

from rlm_mcp.bridge import ops
from rlm_mcp.engine.assembly import worker_services
from rlm_mcp.session.services import RequestContext, Services

pytestmark = pytest.mark.anyio

SESSION = SimpleNamespace(id="s1")


def recording(name: str, seen: list[tuple[str, Any, dict[str, Any], RequestContext]]) -> Any:
    async def handler(session: Any, request: dict[str, Any], context: RequestContext) -> dict[str, Any]:
        seen.append((name, session, request, context))
        return {"ok": True, "by": name}

    return handler


async def test_a_request_goes_to_the_handler_of_its_op_with_the_session_and_context() -> None:
    seen: list[tuple[str, Any, dict[str, Any], RequestContext]] = []
    services = Services({ops.LLM: recording("llm", seen), ops.MEMORY: recording("memory", seen)})
    context = RequestContext(client_session="client", deadline=12.5)
    request = {"op": ops.MEMORY, "action": "recall", "id": "w1"}
    assert await services.handle(SESSION, request, context) == {"ok": True, "by": "memory"}  # type: ignore[arg-type]
    assert seen == [("memory", SESSION, request, context)]


@pytest.mark.parametrize("op", ["nonsense", ops.EXEC, ops.RLM, None, 5, ["llm"]])
async def test_an_op_without_a_handler_is_refused_as_malformed(op: Any) -> None:
    """Unknown ops, the host's own requests, a worker request nobody registered and an op that is no str."""
    seen: list[tuple[str, Any, dict[str, Any], RequestContext]] = []
    services = Services({ops.LLM: recording("llm", seen)})
    reply = await services.handle(SESSION, {"op": op}, RequestContext())  # type: ignore[arg-type]
    assert reply["ok"] is False and reply["error"].startswith("malformed request from the worker: op ")
    assert seen == []


async def test_a_long_unknown_op_is_not_echoed_whole() -> None:
    reply = await Services().handle(SESSION, {"op": "x" * 10_000}, RequestContext())  # type: ignore[arg-type]
    assert reply["ok"] is False and len(reply["error"]) < 200


async def test_a_handlers_failure_becomes_a_reply(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(session: Any, request: dict[str, Any], context: RequestContext) -> dict[str, Any]:
        raise KeyError("secret detail")

    with caplog.at_level(logging.ERROR, logger="rlm_mcp.session.services"):
        reply = await Services({ops.MAP: broken}).handle(SESSION, {"op": ops.MAP}, RequestContext())  # type: ignore[arg-type]
    assert reply == {"ok": False, "error": "the server failed on this request (KeyError); see its log"}
    assert "secret detail" in caplog.text  # the operator's log has it; the worker's code does not


def test_only_the_workers_requests_can_be_registered_and_each_once() -> None:
    services = Services()
    handler = recording("llm", [])
    with pytest.raises(ValueError, match="not a request the worker sends"):
        services.register(ops.EXEC, handler)
    services.register(ops.LLM, handler)
    with pytest.raises(ValueError, match="already has a handler"):
        services.register(ops.LLM, handler)


def test_the_server_serves_every_request_the_worker_sends() -> None:
    assert worker_services().ops == sorted(ops.WORKER_REQUESTS)
