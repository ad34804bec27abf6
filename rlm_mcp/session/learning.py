"""A session's use of the workspace memory: what a load is offered, the REPL's memory requests, and the
distillation of its work when it closes (or when asked).

Everything the worker sends here is bounded and checked: the text of a finding is stored as one line and
shown quoted and escaped, the input it is about is the server's own record of what was loaded (the worker
names a context, never a digest or a path), and nothing that comes back from the memory is run. What a
session remembers or distils is a proposal: no model sees it (here, in a load's result, or in a system
prompt built from `session.offered`) until a person approves it, unless --memory-auto-approve.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp.config import Settings
from rlm_mcp.contexts.selection import Selection
from rlm_mcp.errors import ContextError, FindingsFull, MemoryUnavailable, SubCallError, UserError
from rlm_mcp.escaping import printable
from rlm_mcp.llm.router import SessionLLM
from rlm_mcp.memory.database import APPROVED
from rlm_mcp.memory.distill import ANSWER_TOKENS
from rlm_mcp.memory.inputs import InputRef, describe, input_of
from rlm_mcp.memory.service import (
    LOAD_FINDINGS,
    DistillReport,
    Memory,
    behavior_line,
    finding_line,
    quoted,
    session_tag,
)
from rlm_mcp.session.loading import LoadedContext, plan_load
from rlm_mcp.session.services import RequestContext, ServedSession
from rlm_mcp.tools.schemas import LoadResult
from rlm_mcp.trace import Tracer

log = logging.getLogger(__name__)

DISTILL_ON_CLOSE_S = 60.0  # a session's close waits this long at most for its distillation
SHOWN_CHARS = 200  # each behavior or finding in a load's result (behaviors() and recall() give them whole)
MIN_CELLS_ON_CLOSE = 3  # a shorter session teaches little: distilling it would cost more than it gives
ACTIONS = ("behaviors", "remember", "recall", "distill")


def input_for(request: dict[str, Any], result: LoadResult, selection: Selection | None) -> InputRef:
    files = selection.files if selection is not None else None
    size = result.bytes or result.chars
    description = describe(result.kind, result.source, size, files)
    return input_of(request, description, selection.total_bytes if selection is not None else 0)


async def offer_on_load(session: ServedSession, result: LoadResult, ref: InputRef) -> None:
    """Put in the load's result the behaviors that fit this kind of input and what was found in it before."""
    memory = session.memory
    if memory is None or not memory.enabled:
        return
    offered = await memory.for_load(session.id, result.name, result.source, ref, count=session.depth == 1)
    behaviors = [behavior_line(behavior, SHOWN_CHARS) for behavior in offered.behaviors]
    found = [finding_line(finding, SHOWN_CHARS) for finding in offered.findings]
    # Each said once a session: a second file of the same kind does not repeat the same behaviors. The
    # session keeps what was offered for a root the server drives, whose system prompt lists it.
    result.behaviors = [line for line in behaviors if line not in session.offered]
    result.findings = [line for line in found if _about(result.name, line) not in session.offered]
    session.offered += [*(_about(result.name, line) for line in result.findings), *result.behaviors]
    cut = any(len(finding.text) > SHOWN_CHARS for finding in offered.findings)
    result._more_findings = bool(result.findings) and (cut or await _left_out(memory, ref, len(offered.findings)))


async def _left_out(memory: Memory, ref: InputRef, shown: int) -> bool:
    """Whether the content has approved findings the load did not show (it shows the latest LOAD_FINDINGS)."""
    return shown >= LOAD_FINDINGS and len(await memory.recall(ref)) > shown


async def own_proposals(memory: Memory, session_id: str, ref: InputRef) -> list[str]:
    """This session's own findings about `ref` that await a person's approval, marked as such: its own words
    shown back to it (so recall() right after remember() is not empty), never another session's."""
    if memory.auto_approve:
        return []
    digest = await memory.digest(ref)
    if digest is None:
        return []
    tag = session_tag(session_id)

    def look(connection: sqlite3.Connection) -> list[str]:
        rows = connection.execute(
            "SELECT text FROM findings WHERE digest = ? AND kind = ? AND session = ? AND status != ? ORDER BY id",
            (digest, ref.kind, tag, APPROVED),
        )
        return [str(text) for (text,) in rows.fetchall()]

    try:
        texts = await memory.db.call(look)
    except MemoryUnavailable:
        return []
    return [f"proposal of this session, awaiting approval: {quoted(text, 480)}" for text in texts]


def _about(name: str, finding: str) -> str:
    return f"found in this same content ({name}): {finding}"


async def input_named(session: ServedSession, about: Any) -> tuple[str, InputRef]:
    """The loaded input a memory request is about: the one named, or the only one."""
    names = list(session.contexts)
    if about is None:
        if len(names) != 1:
            listed = ", ".join(repr(name) for name in names) or "none yet: load_context first"
            raise UserError(f"say which context this is about (about=...): loaded are {listed}")
        about = names[0]
    if not isinstance(about, str) or about not in session.contexts:
        raise UserError(f"no loaded context {printable(str(about), 80)!r}; contexts() lists them")
    ref = session.inputs.get(about)
    if ref is None:  # loaded before a restart: plan it again, against today's roots
        ref = session.inputs[about] = await planned_input(session.contexts[about], session.settings)
    return about, ref


async def planned_input(context: LoadedContext, settings: Settings) -> InputRef:
    """The input a context recorded by its arguments holds today (its load planned again, not run)."""
    try:
        request, selection = await plan_load(context, settings)
    except (ContextError, UserError) as exc:
        raise UserError(f"cannot tell which content {context.name!r} is now: {exc}") from None
    files = selection.files if selection is not None else None
    size = int(request.get("size") or (selection.total_bytes if selection else len(context.text or "")))
    kind = "str" if request.get("kind") in ("text", "value") else str(request.get("kind"))
    return input_of(request, describe(kind, context.source, size, files), size)


async def serve_memory(session: ServedSession, frame: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    """The reply to a worker's {"op": "memory", "action": ...}."""
    memory = session.memory
    action = frame.get("action")
    if action not in ACTIONS:
        return {"ok": False, "error": f"unknown memory request {printable(str(action), 40)!r}"}
    if memory is None or not memory.enabled:
        return {"ok": False, "error": "the memory is off in this server (RLM_MCP_MEMORY=off)"}
    try:
        if action == "behaviors":
            query, k = frame.get("query"), frame.get("k")
            if not isinstance(query, str) or not isinstance(k, int) or not 1 <= k <= 50:
                return {"ok": False, "error": "behaviors(query, k): a str and an int from 1 to 50"}
            found = await memory.behaviors(session.id, query[:10_000], k, count=session.depth == 1)
            return {"ok": True, "lines": [behavior_line(behavior) for behavior in found]}
        if action == "distill":
            if session.settings.distill == "off":
                return {"ok": False, "error": "distillation is off in this server (RLM_MCP_DISTILL=off)"}
            if session.depth > 1:  # its work is in its parent's trace, distilled with the parent's session
                return {"ok": False, "error": "a child RLM's work is distilled with its parent session's"}
            report = await distill_session(session, context.client_session)
            return {"ok": True, "text": report.summary()}
        name, ref = await input_named(session, frame.get("about"))
        if action == "remember" and session.depth > 1:  # its context is whatever text its parent chose
            return {"ok": False, "error": "a child RLM cannot file findings; return what it found to its parent"}
        if action == "recall":
            lines = [finding_line(finding) for finding in await memory.recall(ref)]
            return {"ok": True, "lines": [*lines, *await own_proposals(memory, session.id, ref)]}
        text = frame.get("text")
        if not isinstance(text, str) or not text.strip():
            return {"ok": False, "error": "remember(text): the fact as a non-empty str"}
        added = await memory.remember(session.id, ref, text[:4_000], session.contexts[name].source)
        said = "remembered" if added else "already remembered"
        shown = "shown when this same content is loaded again"
        if not memory.auto_approve:
            shown = f"a proposal: {shown} once a person approves it; the user approves it with rlm-mcp handbook review"
        return {"ok": True, "text": f"{said} about {name!r} ({shown})"}
    except (UserError, MemoryUnavailable, FindingsFull) as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # the worker waits for a reply: it must get one, whatever failed here
        log.exception("session %s: a memory request failed", session.id)
        return {"ok": False, "error": f"the memory failed ({type(exc).__name__}); see the server's log"}


async def distill_session(session: ServedSession, client_session: Any = None, min_cells: int = 1) -> DistillReport:
    """Distil the session's work since its last distillation (two sub-calls: a reflection, a distillation)."""
    memory = session.memory
    if memory is None or not memory.enabled:
        return DistillReport(skipped="the memory is off (RLM_MCP_MEMORY=off)")
    inputs: dict[str, InputRef] = {}
    for name in list(session.contexts):
        try:
            inputs[name] = (await input_named(session, name))[1]
        except UserError:
            continue
    trace = session.tracer.path
    return await distill_trace(
        memory, session.llm, trace, session.tracer, session.id, inputs, client_session, min_cells
    )


async def distill_trace(
    memory: Memory,
    llm: SessionLLM,
    trace: Path,
    tracer: Tracer,
    session_id: str,
    inputs: dict[str, InputRef],
    client_session: Any = None,
    min_cells: int = 1,
) -> DistillReport:
    """Distil the trace at `trace` with two sub-calls of `llm` (a session's own: within its budget, in its
    usage), the calls recorded by `tracer` (the session's own, or another file's)."""
    spent = llm.budget.exhausted()
    if spent is not None:
        return DistillReport(skipped=f"the session's budget is spent: {spent}")
    try:
        backend = await llm.router.backend_for(client_session)
    except SubCallError as exc:
        return DistillReport(skipped=f"no sub-model to distil with: {exc}")

    async def complete(system: str, prompt: str) -> str:
        answer = await llm.complete(llm.make_call(backend, prompt, system, None, ANSWER_TOKENS), backend)
        return answer.completion.text

    with tracer.event("distill", "distill") as event:
        try:
            report = await memory.distill(session_id, trace, inputs, complete, min_cells)
        except SubCallError as exc:
            report = DistillReport(skipped=f"the sub-model failed: {exc}")
        event.set(outcome=report.verdict, added=report.added, merged=report.merged, findings=report.findings)
        if report.skipped:
            event.set(error=report.skipped)
    return report


async def distill_on_close(session: ServedSession) -> None:
    """At a session's end, if distillation is on-close: bounded in time, never failing the close."""
    memory = session.memory
    if session.depth > 1 or memory is None or not memory.enabled or session.settings.distill != "on-close":
        return
    if not session.cells:
        return
    with anyio.move_on_after(DISTILL_ON_CLOSE_S) as scope:
        try:
            report = await distill_session(session, min_cells=MIN_CELLS_ON_CLOSE)
        except Exception as exc:  # a close must finish whatever the memory does
            log.warning("session %s: distillation failed: %s", session.id, exc)
            return
    if scope.cancelled_caught:
        log.warning("session %s: distillation took over %g s and was stopped", session.id, DISTILL_ON_CLOSE_S)
    else:
        log.info("session %s: %s", session.id, report.summary())


async def conditioned(session: ServedSession, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Behavior-conditioned sub-calls: the behaviors relevant to the batch (its prompts' beginnings and the
    session's kinds of input) put before each call's own system prompt. One retrieval per batch, so every
    call of it gets the same system prompt (which providers' prompt caches reward)."""
    memory = session.memory
    if memory is None or not memory.enabled:
        return calls
    kinds = [ref.description for ref in session.inputs.values()]
    query = " ".join([*(call["prompt"][:500] for call in calls[:20]), *kinds])
    block = await memory.conditioning(session.id, query, count=session.depth == 1)
    if block is None:
        return calls
    return [{**call, "system": block + (f"\n\n{call['system']}" if call.get("system") else "")} for call in calls]
