"""The replay backend: each request is answered by what the session got for it, in the order it got them; a
recorded failure fails again with its kind; anything the session never asked, or whose answer the trace did
not keep whole, is refused with kind "not_recorded" and counted. Its recording is read from a trace file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.recording import reply_record, sub_call_sha256, turn_sha256
from rlm_mcp.llm.types import ChatReply, ChatRequest, SubCall, ToolCall, Turn
from rlm_mcp.replay.backend import NOT_RECORDED, ReplayBackend
from rlm_mcp.replay.record import load
from rlm_mcp.trace import SCHEMA_VERSION, shorten

pytestmark = pytest.mark.anyio

ASKED = SubCall("summarise chunk 1", None, "model-a", 256)
FAILED = SubCall("summarise chunk 2", None, "model-a", 256)
SHORTENED = SubCall("summarise chunk 3", None, "model-a", 256)
TURN = ChatRequest("You answer.", (Turn("user", "how many?"),), (), "root-model", 4_096)


def sub_call(event_id: int, call: SubCall, **fields: Any) -> dict[str, Any]:
    return {
        "v": SCHEMA_VERSION, "id": event_id, "parent": 2, "type": "sub_call", "request_sha256": sub_call_sha256(call),
        "requested_model": call.model, "model": call.model, **fields,
    }  # fmt: skip


def backend_for(tmp_path: Path, *events: dict[str, Any]) -> ReplayBackend:
    lines = [
        {"v": SCHEMA_VERSION, "id": 1, "parent": None, "type": "tool", "name": "run_code", "arguments": {"code": "1"}},
        {"v": SCHEMA_VERSION, "id": 2, "parent": 1, "type": "cell", "code": "1"},
        *events,
    ]
    trace = tmp_path / "trace.jsonl"
    trace.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return ReplayBackend(load(trace))


async def test_a_request_asked_twice_gets_its_answers_in_order_then_is_refused(tmp_path: Path) -> None:
    backend = backend_for(
        tmp_path,
        sub_call(3, ASKED, answer="first", input_tokens=10, output_tokens=2),
        sub_call(4, ASKED, answer="second", subscription=True),
    )
    assert backend.default_model == "model-a"
    first = await backend.complete(ASKED, 5)
    assert (first.text, first.input_tokens, first.output_tokens, first.subscription) == ("first", 10, 2, False)
    assert (await backend.complete(ASKED, 5)).text == "second"
    with pytest.raises(SubCallError) as caught:
        await backend.complete(ASKED, 5)
    assert caught.value.kind == NOT_RECORDED and backend.not_recorded == 1


async def test_a_request_the_session_never_made_is_refused_with_its_prompt_shown_short(tmp_path: Path) -> None:
    backend = backend_for(tmp_path, sub_call(3, ASKED, answer="first"))
    new = SubCall("summarise chunk 1\x1b[2J" + "x" * 500, None, "model-a", 256)
    with pytest.raises(SubCallError, match="the replayed code asked a sub-call the session never asked") as caught:
        await backend.complete(new, 5)
    assert caught.value.kind == NOT_RECORDED and "\x1b" not in str(caught.value) and len(str(caught.value)) < 300
    different_size = SubCall(ASKED.prompt, None, "model-a", 512)  # the same prompt asked for more tokens
    with pytest.raises(SubCallError):
        await backend.complete(different_size, 5)
    assert backend.not_recorded == 2
    assert (await backend.complete(ASKED, 5)).text == "first"  # the refusals took nothing from the recording


async def test_a_recorded_failure_fails_again_with_its_kind(tmp_path: Path) -> None:
    backend = backend_for(tmp_path, sub_call(3, FAILED, error="rate limited", kind="overloaded"))
    with pytest.raises(SubCallError, match=r"^rate limited$") as caught:
        await backend.complete(FAILED, 5)
    assert caught.value.kind == "overloaded" and backend.not_recorded == 0


async def test_an_answer_the_trace_shortened_is_not_given_back(tmp_path: Path) -> None:
    backend = backend_for(tmp_path, sub_call(3, SHORTENED, answer=shorten("a" * 200_000, 100_000)))
    with pytest.raises(SubCallError, match="the recorded answer was too long for the trace") as caught:
        await backend.complete(SHORTENED, 5)
    assert caught.value.kind == NOT_RECORDED and backend.not_recorded == 1


async def test_a_root_turn_is_answered_with_its_recorded_text_and_tool_calls(tmp_path: Path) -> None:
    reply = ChatReply("let me look", (ToolCall("c1", "run_code", {"code": "len(context)"}),), "root-model", 50, 5)
    turn = {
        "v": SCHEMA_VERSION, "id": 3, "parent": None, "type": "root_call", "turn_sha256": turn_sha256(TURN),
        "reply": reply_record(reply), "input_tokens": 50, "output_tokens": 5,
    }  # fmt: skip
    forged = {**turn, "id": 4, "reply": {"text": "x", "calls": [{"id": 1, "name": "run_code", "arguments": {}}]}}
    backend = backend_for(tmp_path, turn, forged)
    answered = await backend.chat(TURN, 5)
    assert (answered.text, answered.calls, answered.input_tokens) == (reply.text, reply.calls, 50)
    with pytest.raises(SubCallError, match="the recorded root-model reply was too long for the trace") as caught:
        await backend.chat(TURN, 5)  # the second recorded turn's calls are not ones reply_record writes
    assert caught.value.kind == NOT_RECORDED
