"""The root loop's own rules: when it stops, what it returns at a cap, and what a bad tool call reads.

The model is a scripted ChatBackend (the protocol of rlm_mcp/llm/types.py) behind the real router and
budget (SessionLLM), so every turn is counted and refused as in a served session. The session is a stand-in
holding only what these paths read (what the memory offered, and the LLM): the calls scripted here never
reach the REPL, so none is faked.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rlm_mcp.engine.loop import RootLoop, RootOutcome
from rlm_mcp.engine.prompts import LAST_TURN
from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.router import Router, SessionLLM
from rlm_mcp.llm.types import BaseBackend, ChatReply, ChatRequest, Completion, SubCall, ToolCall, can_chat
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio
QUESTION = "How many lines mention the cache?"


class ScriptedModel(BaseBackend):
    """A root model that says what the test scripted, turn by turn (a SubCallError is raised as the call's
    failure), and keeps every request it was sent."""

    name = "scripted"
    default_model: str | None = "scripted-model"

    def __init__(self, *script: ChatReply | SubCallError) -> None:
        self.script = list(script)
        self.requests: list[ChatRequest] = []

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        raise AssertionError("a root loop makes no plain sub-call")

    async def chat(self, request: ChatRequest, timeout_s: float) -> ChatReply:
        self.requests.append(request)
        step = self.script.pop(0)
        if isinstance(step, SubCallError):
            raise step
        return step


def said(text: str, *tools: str) -> ChatReply:
    calls = tuple(ToolCall(f"call-{index}", tool, {}) for index, tool in enumerate(tools))
    return ChatReply(text, calls, "scripted-model", input_tokens=100, output_tokens=10)


def loop_for(
    tmp_path: Path, model: ScriptedModel, iterations: int = 3, seconds: float = 30, **settings: Any
) -> RootLoop:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    llm = SessionLLM(Router(make_settings(tmp_path, data, retry_base_s=0.0, **settings), backend=model))
    session = SimpleNamespace(offered=[], llm=llm)
    return RootLoop(session, model, "scripted-model", iterations, time.monotonic() + seconds, can_recurse=False)  # type: ignore[arg-type]


async def run(loop: RootLoop) -> RootOutcome:
    return await loop.run(QUESTION, {"context": "str, 1,000 chars"})


def test_the_scripted_model_is_a_chat_backend() -> None:
    assert can_chat(ScriptedModel())


async def test_a_reply_without_a_tool_call_is_the_answer(tmp_path: Path) -> None:
    model = ScriptedModel(said("  42 lines.  "))
    outcome = await run(loop_for(tmp_path, model))
    assert (outcome.answer, outcome.stopped, outcome.iterations, outcome.partial) == ("42 lines.", "answered", 1, False)
    (request,) = model.requests
    assert [tool.name for tool in request.tools] == ["run_code", "sub_query"]
    assert request.turns[0].text == QUESTION and "`context` (str, 1,000 chars)" in request.system
    assert (outcome.root.calls, outcome.root.input_tokens, outcome.root.output_tokens) == (1, 100, 10)
    assert outcome.read_chars == len(request.system) + len(QUESTION)


async def test_at_the_turn_cap_it_asks_once_more_without_tools_and_is_partial(tmp_path: Path) -> None:
    model = ScriptedModel(said("looking", "nope"), said("still looking", "nope"), said("about 40, unsure"))
    outcome = await run(loop_for(tmp_path, model, iterations=2))
    assert (outcome.answer, outcome.stopped, outcome.iterations, outcome.partial) == (
        "about 40, unsure",
        "iterations",
        2,
        True,
    )
    assert outcome.tool_calls == 2 and outcome.root.calls == 3
    last = model.requests[-1]
    assert last.tools == () and last.turns[-1].role == "user" and last.turns[-1].text == LAST_TURN


async def test_a_silent_last_turn_leaves_the_last_thing_the_model_said(tmp_path: Path) -> None:
    model = ScriptedModel(said("first idea", "nope"), said("", "nope"), said("   "))
    outcome = await run(loop_for(tmp_path, model, iterations=2))
    assert (outcome.answer, outcome.stopped) == ("first idea", "iterations")


async def test_an_unknown_tool_is_an_error_result_naming_the_tools(tmp_path: Path) -> None:
    model = ScriptedModel(said("", "exec"), said("done"))
    loop = loop_for(tmp_path, model)
    outcome = await run(loop)
    (result,) = model.requests[1].turns[-1].results
    assert result.is_error and result.call_id == "call-0"
    assert result.text == "Error: there is no tool 'exec'; the tools are run_code and sub_query"
    assert outcome.read_chars == len(model.requests[0].system) + len(QUESTION) + len(result.text)


async def test_bad_arguments_are_error_results_that_say_what_to_pass(tmp_path: Path) -> None:
    calls = (ToolCall("a", "run_code", {"code": "   "}), ToolCall("b", "sub_query", {"prompt": 3}))
    model = ScriptedModel(ChatReply("", calls, "scripted-model", 1, 1), said("gave up"))
    outcome = await run(loop_for(tmp_path, model))
    first, second = model.requests[1].turns[-1].results
    assert first.text == "Error: run_code needs `code`: the Python to run, as a string" and first.is_error
    assert second.text.startswith("Error: sub_query needs `prompt` (a string)") and second.is_error
    assert (outcome.answer, outcome.tool_calls) == ("gave up", 2)


async def test_the_budget_stops_it_with_its_best_answer_so_far(tmp_path: Path) -> None:
    model = ScriptedModel(said("maybe 12", "nope"), said("never sent"))
    outcome = await run(loop_for(tmp_path, model, max_sub_calls=1))  # the root's turns count as calls
    assert (outcome.answer, outcome.stopped, outcome.partial, outcome.error) == ("maybe 12", "budget", True, None)
    assert len(model.requests) == 1


async def test_no_time_left_stops_it_before_any_call(tmp_path: Path) -> None:
    model = ScriptedModel(said("never sent"))
    outcome = await run(loop_for(tmp_path, model, seconds=-1))
    assert (outcome.answer, outcome.stopped, outcome.iterations, outcome.partial) == ("", "time", 1, True)
    assert model.requests == []


async def test_a_failed_root_call_is_a_failure_not_a_partial_answer(tmp_path: Path) -> None:
    model = ScriptedModel(said("half", "nope"), SubCallError("model not found", kind="provider"))
    outcome = await run(loop_for(tmp_path, model))
    assert (outcome.stopped, outcome.partial) == ("failed", False)
    assert outcome.error == "the root model's call failed: model not found"
