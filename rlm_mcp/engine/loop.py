"""The root loop: a model given run_code and sub_query on a session, turn by turn, until it answers.

It ends when the model replies without a tool call (its text is the answer) or sets `answer` in the REPL,
and at a cap (turns, time, budget) with its best answer so far, marked partial: after the last turn it is
asked once more, without tools, for what it found. Each tool result is the text an MCP client's model
would read (rlm_mcp/tools/render.py), so a child RLM sees what the client's model sees.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from rlm_mcp.engine.prompts import ANSWER_VARIABLE, LAST_TURN, TOOLS, system_prompt
from rlm_mcp.errors import SubCallError, UserError
from rlm_mcp.llm.types import ChatBackend, ChatRequest, ToolCall, ToolResult, Turn
from rlm_mcp.tools.declarations import ROOT_TOOLS, RUN_CODE, SUB_QUERY
from rlm_mcp.tools.render import render_run, render_sub_query
from rlm_mcp.tools.schemas import SubCallUsage

if TYPE_CHECKING:
    from rlm_mcp.session.session import Session

ROOT_MAX_TOKENS = 4_096  # one turn of a root model: code or a short answer, never the input itself
MIN_CELL_S = 1.0  # a cell is not started with less time than this left


@dataclass
class RootOutcome:
    """How a root loop ended. `stopped`: "answered", "answer variable", "iterations", "time", "budget" (partial),
    or "failed" (no answer at all; `error` says why). `root`: the root model's own calls and tokens."""

    answer: str
    stopped: str
    iterations: int
    root: SubCallUsage = field(default_factory=SubCallUsage)
    error: str | None = None
    tool_calls: int = 0
    read_chars: int = 0  # what the root was given to read: its system prompt, the question and every tool result

    @property
    def partial(self) -> bool:
        return self.stopped in ("iterations", "time", "budget")


@dataclass
class RootLoop:
    session: Session
    backend: ChatBackend
    model: str
    max_iterations: int
    deadline: float  # time.monotonic() by which it ends
    can_recurse: bool
    client_session: Any | None = None
    turns: list[Turn] = field(default_factory=list)
    _answer_maybe_set: bool = False

    async def run(self, question: str, contexts: dict[str, str]) -> RootOutcome:
        system = system_prompt(contexts, self.max_iterations, self.can_recurse, self.session.offered)
        self.turns = [Turn("user", question)]
        best = ""  # the last thing the model said: its answer so far if a cap stops it
        outcome = RootOutcome("", "iterations", 0, read_chars=len(system) + len(question))
        while outcome.iterations < self.max_iterations:
            outcome.iterations += 1
            try:
                reply = await self._turn(system, tools=True, usage=outcome.root)
            except _Stop as stop:
                return self._partial(outcome, best, stop.why, stop.error)
            best = reply.text.strip() or best
            if not reply.calls:
                outcome.answer, outcome.stopped = reply.text.strip(), "answered"
                return outcome
            results = [await self._call_tool(call) for call in reply.calls]
            outcome.tool_calls += len(results)
            outcome.read_chars += sum(len(result.text) for result in results)
            self.turns += [Turn("assistant", reply.text, reply.calls), Turn("tool", results=tuple(results))]
            answer = await self._answer_variable()
            if answer is not None:
                outcome.answer, outcome.stopped = answer, "answer variable"
                return outcome
        self.turns.append(Turn("user", LAST_TURN))
        try:
            reply = await self._turn(system, tools=False, usage=outcome.root)
        except _Stop as stop:
            return self._partial(outcome, best, "iterations", stop.error)
        return self._partial(outcome, reply.text.strip() or best, "iterations", None)

    def _partial(self, outcome: RootOutcome, best: str, why: str, error: str | None) -> RootOutcome:
        outcome.answer, outcome.stopped = best, why
        if why == "failed":
            outcome.error = error
        return outcome

    async def _turn(self, system: str, *, tools: bool, usage: SubCallUsage) -> Any:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise _Stop("time")
        request = ChatRequest(system, tuple(self.turns), TOOLS if tools else (), self.model, ROOT_MAX_TOKENS)
        try:
            with anyio.fail_after(remaining):
                reply, cost = await self.session.llm.chat(request, self.backend)
        except TimeoutError:
            raise _Stop("time") from None
        except SubCallError as exc:
            raise _Stop(
                "budget" if exc.kind == "budget" else "failed", f"the root model's call failed: {exc}"
            ) from None
        usage.calls += 1
        usage.input_tokens += reply.input_tokens
        usage.output_tokens += reply.output_tokens
        usage.cost_usd += cost or 0.0
        return reply

    async def _call_tool(self, call: ToolCall) -> ToolResult:
        """A tool call as an MCP client would make it: bad arguments get an error result that says what to do."""
        try:
            if call.name == RUN_CODE.name:
                code = call.arguments.get("code")
                if not isinstance(code, str) or not code.strip():
                    raise UserError("run_code needs `code`: the Python to run, as a string")
                left = self.deadline - time.monotonic()
                if left < MIN_CELL_S:
                    raise UserError("no time is left for another cell: answer now with what you have")
                timeout = min(self.session.settings.timeout_s, self.session.settings.max_timeout_s, left)
                result = await self.session.run_code(code, timeout, self.client_session, wait_s=math.inf)
                named = {info.name for info in result.changed}
                self._answer_maybe_set |= ANSWER_VARIABLE in named or result.changed_total > len(result.changed)
                return ToolResult(call.id, render_run(result), result.outcome != "ok")
            if call.name == SUB_QUERY.name:
                prompt, context = call.arguments.get("prompt"), call.arguments.get("context")
                if not isinstance(prompt, str) or not (context is None or isinstance(context, str)):
                    raise UserError("sub_query needs `prompt` (a string) and optionally `context` (a REPL expression)")
                answer = await self.session.sub_query(prompt, context, None, None, self.client_session)
                return ToolResult(call.id, render_sub_query(answer))
            raise UserError(f"there is no tool {call.name!r}; the tools are {' and '.join(t.name for t in ROOT_TOOLS)}")
        except UserError as exc:
            return ToolResult(call.id, f"Error: {exc}", is_error=True)

    async def _answer_variable(self) -> str | None:
        """The REPL's `answer`, if a cell of this turn may have set it."""
        if not self._answer_maybe_set:
            return None
        self._answer_maybe_set = False
        try:
            return (await self.session.text_of(ANSWER_VARIABLE)).strip()
        except UserError:
            return None


class _Stop(Exception):
    def __init__(self, why: str, error: str | None = None) -> None:
        super().__init__(why)
        self.why = why
        self.error = error
