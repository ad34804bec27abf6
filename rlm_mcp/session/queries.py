"""What a session answers without running a cell: a one-off sub-query, an expression's text, and the reports
(usage, info, the sandbox's layers).

None of these change what the session holds, so they live apart from its lifecycle (session.py): the session
delegates to a SessionQueries, which reaches the session only through QueryOwner, so that this module does not
import session.py.
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio

from rlm_mcp.config import Settings
from rlm_mcp.errors import SubCallError, UserError
from rlm_mcp.host.supervisor import WorkerSupervisor
from rlm_mcp.llm.router import SessionLLM
from rlm_mcp.sandbox.policy import summary
from rlm_mcp.session.cells import CellRunner
from rlm_mcp.session.loading import LoadedContext
from rlm_mcp.tools.schemas import SubQueryResult
from rlm_mcp.trace import Tracer


class QueryOwner(Protocol):
    """What the queries read of their session (session.py Session): its identity, settings, lock, worker,
    cells, model budget and trace, what it holds, and the count of tool calls it has served."""

    id: str
    settings: Settings
    lock: anyio.Lock
    worker: WorkerSupervisor
    runner: CellRunner
    llm: SessionLLM
    tracer: Tracer
    contexts: dict[str, LoadedContext]
    child_records: list[dict[str, Any]]
    cells: int
    calls: int


class SessionQueries:
    """A session's answers to questions that run no cell; each waits its turn on the session's lock."""

    def __init__(self, owner: QueryOwner) -> None:
        self.owner = owner

    async def sub_query(
        self,
        prompt: str,
        context: str | None,
        model: str | None,
        max_tokens: int | None,
        client_session: Any | None = None,
    ) -> SubQueryResult:
        arguments = {"prompt": prompt, "context": context, "model": model, "max_tokens": max_tokens}
        with self.owner.tracer.event("tool", "sub_query", arguments=arguments) as event:
            result = await self._sub_query(prompt, context, model, max_tokens, client_session)
            event.set(outcome="ok")
            self.owner.calls += 1
            return result

    async def _sub_query(
        self,
        prompt: str,
        context: str | None,
        model: str | None,
        max_tokens: int | None,
        client_session: Any | None,
    ) -> SubQueryResult:
        if not prompt.strip():
            raise UserError("`prompt` is empty: say what the sub-model should do with the context")
        if max_tokens is not None and max_tokens <= 0:
            raise UserError("`max_tokens` must be a positive number of tokens")
        if context is not None:
            prompt = f"<context>\n{await self.text_of(context)}\n</context>\n\n{prompt}"
        llm = self.owner.llm
        try:
            backend = await llm.router.backend_for(client_session)
            call = llm.make_call(backend, prompt, None, model, max_tokens)
            answer = await llm.complete(call, backend)
        except SubCallError as exc:
            raise UserError(f"sub-query failed: {exc}") from None
        completion = answer.completion
        return SubQueryResult(
            answer=completion.text,
            model=completion.model,
            backend=answer.backend,
            input_tokens=completion.input_tokens,
            output_tokens=completion.output_tokens,
            cost_usd=answer.cost_usd,
            cached=answer.cached,
            session_usage=llm.usage.model_copy(),
        )

    async def text_of(self, expression: str) -> str:
        """An expression of the REPL's (e.g. `chunks[3]`, `answer`) evaluated there, as text."""
        owner = self.owner
        await owner.runner.wait_until_idle(owner.settings.wait_s)
        async with owner.lock:
            timeout = owner.settings.timeout_s
            outcome, notes = await owner.worker.call(lambda worker: worker.eval_text(expression, timeout=timeout))
            reply = outcome.reply or {}
            if not reply.get("ok") or not isinstance(reply.get("text"), str):
                why = reply.get("error") or outcome.cause
                said = f" ({'; '.join(notes)})" if notes else ""
                raise UserError(f"the context expression {expression!r} failed: {why}{said}")
            return str(reply["text"])

    def usage(self) -> dict[str, Any]:
        """Sub-call usage and cost, for the session and per model (the same figures the trace holds)."""
        llm = self.owner.llm
        return {
            "session": self.owner.id,
            "total": llm.usage.model_dump(),
            "by_model": {model: usage.model_dump() for model, usage in llm.usage_by_model.items()},
            "children": self.owner.child_records,
        }

    async def info(self) -> dict[str, Any]:
        """What the session holds and what it may still do: contexts, variables, budget left, sandbox."""
        owner = self.owner
        budget = owner.llm.budget
        cell = owner.runner.running
        variables: Any = None  # not while a cell runs: the worker is busy
        if cell is None:
            async with owner.lock:
                outcome, _ = await owner.worker.call(lambda worker: worker.variables())
            variables = (outcome.reply or {}).get("variables", [])
        return {
            "session": owner.id,
            "running": cell.status() if cell is not None else None,
            "contexts": [{"name": c.name, "source": c.source} for c in owner.contexts.values()],
            "variables": variables,
            "cells": owner.cells,
            "budget_left": {
                "sub_calls": budget.max_calls - budget.calls,
                "tokens": None if budget.max_tokens is None else budget.max_tokens - budget.tokens,
                "cost_usd": None if budget.max_cost is None else round(budget.max_cost - budget.cost, 6),
            },
            "sandbox": summary(owner.worker.client.sandbox),
            "trace": str(owner.tracer.path),
        }

    async def sandbox_layers(self) -> list[dict[str, Any]]:
        """The running worker's report of its lock-down (starting the worker if there is none yet)."""
        client = self.owner.worker.client
        if client.sandbox and client.alive:
            return list(client.sandbox)
        async with self.owner.lock:
            await self.owner.worker.ensure_keeping_notes()
            return list(client.sandbox)
