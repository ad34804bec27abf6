"""Child RLMs: what the server does with a cell's rlm_query.

Each child is a session of its own (its own sandboxed worker, its context loaded there as `context`) whose
root is a sub-model driven by the root loop. Everything that bounds the recursion is held here, in the
server, where REPL code cannot reach it: the child's depth (a session at --max-depth gets plain sub-calls
instead, and is told so), its budget (an equal share of its parent's remainder, reserved before any child
starts, so siblings cannot together overspend, and settled to what it used when it ends), its turns and
time (never past its parent's cell), and how many run at once (--max-children per parent).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from typing import Any

import anyio

from rlm_mcp.bridge.frames import MAX_FRAME_BYTES
from rlm_mcp.engine.loop import RootLoop, RootOutcome
from rlm_mcp.errors import SubCallError, UserError
from rlm_mcp.escaping import printable
from rlm_mcp.llm.budget import Budget, Reservation
from rlm_mcp.llm.router import SessionLLM
from rlm_mcp.llm.types import ChatBackend, can_chat
from rlm_mcp.session.services import RequestContext
from rlm_mcp.session.session import Session
from rlm_mcp.tools.schemas import SubCallUsage

CONTEXT_KINDS = ("text", "path", "value")
PROMPT_PREVIEW = 200


async def serve_children(parent: Session, frame: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    """The reply to a worker's {"op": "rlm", "children": [...]}: one result per child, in order. Takes the
    whole Session, not a ServedSession: a child's session is built from its parent's."""
    client_session, deadline = context.client_session, context.deadline
    children = frame.get("children")
    if not isinstance(children, list) or not children or not all(_valid_child(c) for c in children):
        return {"ok": False, "error": "malformed rlm_query request from the worker", "kind": "host"}
    if parent.depth >= parent.settings.max_depth:
        return await _plain_calls(parent, children, client_session)
    try:
        backend = await parent.llm.router.backend_for(client_session)
    except SubCallError as exc:
        return {"ok": False, "error": str(exc), "kind": exc.kind}
    if not can_chat(backend):
        why = (
            f"a child RLM needs a root model with tool use, and the {backend.name} backend has none here; "
            "use llm_query, or set ANTHROPIC_API_KEY or RLM_MCP_OPENAI_BASE_URL"
        )
        return {"ok": False, "error": why, "kind": "no_backend"}
    budget = parent.llm.budget
    share = budget.share(len(children))
    if share is None:
        why = f"the budget left cannot give each of {len(children):,} child RLMs a call: {budget.spent()}"
        return {"ok": False, "error": why, "kind": "budget"}
    reservations = [budget.hold(share) for _ in children]  # all before any starts: siblings share, never overspend
    results: list[dict[str, Any]] = [{} for _ in children]

    async def one(index: int) -> None:
        async with parent.child_limiter:
            results[index] = await _run_child(
                parent,
                children[index],
                reservations[index],
                backend,
                client_session,
                deadline,  # type: ignore[arg-type]
            )

    async with anyio.create_task_group() as group:
        for index in range(len(children)):
            group.start_soon(one, index)
    return {"ok": True, "results": results}


def _valid_child(child: Any) -> bool:
    if not isinstance(child, dict) or not isinstance(child.get("prompt"), str):
        return False
    context = child.get("context")
    if context is not None and not (isinstance(context, dict) and context.get("kind") in CONTEXT_KINDS):
        return False
    iterations, timeout = child.get("max_iterations"), child.get("timeout_s")
    return (
        (child.get("model") is None or isinstance(child.get("model"), str))
        and (iterations is None or (isinstance(iterations, int) and iterations > 0))
        and (timeout is None or (isinstance(timeout, (int, float)) and timeout > 0))
    )


async def _run_child(
    parent: Session,
    spec: dict[str, Any],
    reservation: Reservation,
    backend: ChatBackend,
    client_session: Any,
    deadline: float,
) -> dict[str, Any]:
    settings = parent.settings
    child_id = secrets.token_hex(12)
    held = parent.llm.budget
    budget = Budget(
        reservation.calls,
        reservation.tokens if held.max_tokens is not None else None,
        reservation.cost if held.max_cost is not None else None,
    )
    llm = SessionLLM(parent.llm.router, budget)
    iterations = min(spec.get("max_iterations") or settings.child_max_iterations, settings.child_max_iterations)
    started = time.monotonic()
    own_deadline = min(deadline, started + min(spec.get("timeout_s") or math.inf, settings.child_timeout_s))
    model = spec.get("model") or settings.sub_model or backend.default_model or "default"
    level = parent.depth + 1
    record: dict[str, Any] = {"id": child_id, "depth": level, "model": model,
                              "prompt": printable(spec["prompt"], PROMPT_PREVIEW)}  # fmt: skip
    with parent.tracer.event("rlm", f"child RLM {child_id[:8]}", prompt=spec["prompt"], level=level) as event:
        child = Session(
            child_id,
            settings.model_copy(update={"inline_text_max_chars": MAX_FRAME_BYTES}),
            parent.llm.router,
            parent.store,
            services=parent.services,
            depth=level,
            llm=llm,
            tracer=parent.tracer,
            ephemeral=True,
        )
        try:
            async with anyio.create_task_group() as group:
                child.spawn = group.start_soon
                try:
                    contexts = await _load(child, spec.get("context"))
                    can_recurse = level < settings.max_depth
                    loop = RootLoop(child, backend, model, iterations, own_deadline, can_recurse, client_session)
                    outcome = await loop.run(spec["prompt"], contexts)
                except UserError as exc:
                    outcome = RootOutcome("", "failed", 0, error=f"the child's context could not be loaded: {exc}")
                finally:
                    with anyio.CancelScope(shield=True):
                        await child.close()
                        await anyio.to_thread.run_sync(parent.store.delete, child_id)
        finally:
            used = llm.usage
            held.settle(reservation, used.input_tokens + used.output_tokens, used.cost_usd, budget.calls)
            _absorb(parent.llm, llm)
            record.update(usage=used.model_dump(), elapsed_s=round(time.monotonic() - started, 3))
            record["children"] = child.child_records
            parent.note_child(record)
        record.update(stopped=outcome.stopped, iterations=outcome.iterations, root=outcome.root.model_dump())
        event.set(outcome=outcome.stopped, answer=outcome.answer, iterations=outcome.iterations, error=outcome.error)
    if outcome.stopped == "failed":
        return {"ok": False, "error": outcome.error or "the child RLM failed", "kind": "child"}
    return {
        "ok": True,
        "text": outcome.answer,
        "partial": outcome.partial,
        "stopped": outcome.stopped,
        "iterations": outcome.iterations,
    }


async def _load(child: Session, context: dict[str, Any] | None) -> dict[str, str]:
    """Load the child's context as `context`; returns what its root is told is loaded."""
    if context is None:
        return {}
    kind = context["kind"]
    path = context.get("path") if kind == "path" else None
    text = context.get("text") if kind == "text" else None
    value = context.get("value") if kind == "value" else None
    if (kind == "path" and not isinstance(path, str)) or (kind == "text" and not isinstance(text, str)):
        raise UserError(f"malformed {kind} context")
    if kind == "value" and not isinstance(value, (dict, list)):
        raise UserError("a context passed as data must be a dict or a list")
    loaded = await child.load_context(name="context", path=path, text=text, value=value)
    return {"context": f"{loaded.kind}, {loaded.chars:,} chars" + (f", {loaded.files:,} files" if loaded.files else "")}


def _absorb(parent: SessionLLM, child: SessionLLM) -> None:
    """Count a child's usage (its root's turns and its sub-calls) as its parent's."""
    _add(parent.usage, child.usage)
    for model, usage in child.usage_by_model.items():
        _add(parent.usage_by_model.setdefault(model, SubCallUsage()), usage)


def _add(total: SubCallUsage, more: SubCallUsage) -> None:
    for name in SubCallUsage.model_fields:
        setattr(total, name, getattr(total, name) + getattr(more, name))


async def _plain_calls(parent: Session, children: list[dict[str, Any]], client_session: Any) -> dict[str, Any]:
    """At the depth cap each child is one plain sub-call: its prompt with its context's text (a mapped file,
    too big for one call, is refused)."""
    level = parent.settings.max_depth
    parent.cell_notes.append(
        f"rlm_query ran as plain sub-calls: this REPL is at depth {parent.depth} of {level} (--max-depth)"
    )
    specs: list[dict[str, Any]] = []
    refused: dict[int, str] = {}
    for index, child in enumerate(children):
        context = child.get("context")
        text = None if context is None else context.get("text")
        if context is not None and context["kind"] == "value":
            text = json.dumps(context.get("value"), ensure_ascii=False)
        if context is not None and context["kind"] == "path":
            refused[index] = (
                "at the depth cap rlm_query is a plain sub-call, which cannot take a whole loaded file; "
                "pass a slice of it (a str) or use llm_query on chunks"
            )
            continue
        prompt = child["prompt"] if text is None else f"<context>\n{text}\n</context>\n\n{child['prompt']}"
        specs.append({"prompt": prompt, "model": child.get("model"), "index": index})
    try:
        answers = await parent.llm.batch(specs, client_session) if specs else []
    except SubCallError as exc:
        return {"ok": False, "error": str(exc), "kind": exc.kind}
    results: list[dict[str, Any]] = [
        {"ok": False, "error": why, "kind": "depth"} for why in (refused.get(i, "") for i in range(len(children)))
    ]
    for spec, answer in zip(specs, answers, strict=True):
        item = {**answer, "partial": False, "stopped": "plain sub-call", "iterations": 0}
        results[spec["index"]] = item
    return {"ok": True, "results": results}
