"""A session: one client's REPL worker, its loaded contexts, and the rules for keeping them alive.

The MCP layer calls into a Session and never touches the worker directly. A session serialises its calls
(a REPL runs one cell at a time), and after any worker death it starts a fresh worker and reloads every
context before answering, so the model is told exactly what survived.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import anyio

from rlm_mcp.bridge import ops
from rlm_mcp.config import Settings
from rlm_mcp.contexts.selection import Selection
from rlm_mcp.errors import ContextError, SubCallError, UserError
from rlm_mcp.host.client import WorkerClient
from rlm_mcp.host.factory import fetched_dir, session_worker_host
from rlm_mcp.host.supervisor import WorkerSupervisor
from rlm_mcp.llm.router import Router, SessionLLM
from rlm_mcp.memory.inputs import InputRef
from rlm_mcp.session.cells import CellRunner
from rlm_mcp.session.learning import conditioned, distill_on_close, input_for, offer_on_load
from rlm_mcp.session.loading import LoadedContext, check_context_name, plan_load, release_fetched
from rlm_mcp.session.progress import ProgressReport
from rlm_mcp.session.queries import SessionQueries
from rlm_mcp.session.results import (
    error_kind,
    load_result,
    valid_call,
    valid_snapshot,
)
from rlm_mcp.session.running import Spawn
from rlm_mcp.session.services import RequestContext, Services
from rlm_mcp.session.store import SessionStore
from rlm_mcp.tools.schemas import LoadResult, RunResult, SubQueryResult
from rlm_mcp.trace import Tracer

log = logging.getLogger(__name__)

MAX_CHILD_RECORDS = 200


class Session:
    def __init__(
        self,
        session_id: str,
        settings: Settings,
        router: Router,
        store: SessionStore,
        record: dict[str, Any] | None = None,
        spawn: Spawn | None = None,
        *,
        services: Services | None = None,
        depth: int = 1,
        llm: SessionLLM | None = None,
        tracer: Tracer | None = None,
        ephemeral: bool = False,
    ) -> None:
        """`record`: what the store kept of this session before a server restart, to resume it; `spawn`
        starts a task owned by the server, in which cells run so that they outlive the calls that start them;
        `services` serves what the worker's code asks the server (session/services.py; none if not given). A
        child RLM's session has a `depth` past 1 (the server's, not the REPL's: it bounds the recursion), its
        share of its parent's budget in `llm`, its parent's `tracer` (so its events nest under the parent's
        cell), and is `ephemeral`: no record, never resumed."""
        self.id = session_id
        self.settings = settings
        self.llm = llm or SessionLLM(router)
        self.memory = router.memory
        self.inputs: dict[str, InputRef] = {}  # what each context holds, as the memory knows inputs
        self.offered: list[str] = []  # what the memory offered at loads, one line each (for a driven root)
        self.store = store
        self.dir = store.directory(session_id)
        self.tracer = tracer or Tracer(self.dir / "trace.jsonl")
        self.services = services or Services()
        self.depth = depth
        self.ephemeral = ephemeral
        self.child_limiter = anyio.CapacityLimiter(settings.max_children)  # per parent: a waiting parent holds none
        self.child_records: list[dict[str, Any]] = []  # what each child RLM did, for the usage resource
        self.cell_notes: list[str] = []  # said once in the running cell's result (e.g. by rlm_query at the cap)
        self.contexts: dict[str, LoadedContext] = {}
        self.cells = 0
        digests: dict[str, str] = {}
        self.cell_errors: Counter[str] = Counter()  # why the running cell's sub-calls failed, each counted
        if record is not None:
            digests = self._take_record(record)
        # The session's one handle on its worker: the supervisor, which reaches it through its client.
        self.worker = WorkerSupervisor(
            session_id,
            WorkerClient(session_worker_host(settings, self.dir), settings.interrupt_grace_s),
            settings,
            contexts=lambda: list(self.contexts.values()),
            plan=self._plan,
            unloadable=self._drop_context,
            save_record=self.save_record,
            resuming=record is not None,
            digests=digests,
        )
        self.lock = anyio.Lock()  # a REPL runs one thing at a time: cells, loads, expressions
        self.last_used = time.monotonic()
        self.calls = 0  # tool calls that passed validation: a session none has used is closed soon
        self.spawn = spawn
        self.runner = CellRunner(self)  # run_code's cells (session/cells.py)
        self.queries = SessionQueries(self)  # what runs no cell: sub_query, text_of, the reports

    @property
    def busy(self) -> bool:
        return self.lock.locked() or self.runner.running is not None

    def take_finished(self) -> RunResult | None:
        """The result of a cell that finished after its call returned `running`, if no call has taken it."""
        return self.runner.take_finished()

    def _take_record(self, record: dict[str, Any]) -> dict[str, str]:
        """What an authentic record says, taken as data: anything of the wrong shape is left out. Returns
        the snapshot digests it holds."""
        contexts = [LoadedContext.from_record(item) for item in record.get("contexts") or []]
        self.contexts.update({context.name: context for context in contexts if context is not None})
        cells = record.get("cells")
        self.cells = cells if isinstance(cells, int) and cells >= 0 else 0
        snapshot = record.get("snapshot")
        return valid_snapshot(snapshot if isinstance(snapshot, dict) else {})

    def _drop_context(self, name: str) -> None:
        """A context the supervisor could not bring back after a restart: no longer loaded."""
        self.contexts.pop(name, None)

    def save_record(self) -> None:
        if self.ephemeral:
            return
        contexts = [context.as_record() for context in self.contexts.values()]
        digests = self.worker.snapshot_digests
        self.store.save(self.id, {"contexts": contexts, "snapshot": digests, "cells": self.cells})

    # -- load_context -----------------------------------------------------------------------------

    async def load_context(
        self,
        *,
        name: str,
        path: str | None,
        text: str | None,
        exclude: list[str] | None = None,
        value: dict[str, Any] | list[Any] | None = None,
    ) -> LoadResult:
        """`value`: a dict or list a parent RLM passed to its child (not offered to clients)."""
        arguments = {"name": name, "path": path, "text": text, "exclude": exclude}
        with self.tracer.event("tool", "load_context", arguments=arguments) as event:
            result = await self._load_context(name=name, path=path, text=text, exclude=exclude, value=value)
            event.set(outcome="ok", kind=result.kind, chars=result.chars, source=result.source)
            self.calls += 1
            return result

    async def _load_context(
        self,
        *,
        name: str,
        path: str | None,
        text: str | None,
        exclude: list[str] | None,
        value: dict[str, Any] | list[Any] | None = None,
    ) -> LoadResult:
        check_context_name(name)
        await self.runner.wait_until_idle(self.settings.wait_s)
        if [path, text, value].count(None) != 2:
            raise UserError("give exactly one of `path` (a file, directory or glob) or `text` (small inline input)")
        wanted = LoadedContext(name, path, text, tuple(exclude or ()), "", value)
        request, selection = await self._plan(wanted)
        source = wanted.source

        async with self.lock:
            timeout = self.settings.max_timeout_s
            outcome, notes = await self.worker.call(lambda worker: worker.load(request, timeout=timeout))
            reply = outcome.reply or {}
            if outcome.fate != "ok" or not reply.get("ok"):
                why = outcome.cause or reply.get("error", "unknown error")
                raise ContextError(f"loading {source} into {name!r} failed: {why}. " + " ".join(notes))
            if reply["kind"] == "files" and not reply["files"]:
                await self.worker.call(lambda worker: worker.unload(name))
                raise ContextError(f"{source} holds no text files (binary: {len(reply['binary'])})")
            if name in self.contexts:
                notes.append(f"replaced the earlier context {name!r} ({self.contexts[name].source})")
            self.contexts[name] = wanted
            self.save_record()
            await release_fetched(fetched_dir(self.dir), self.contexts.values())  # a copy of the one replaced
        result = load_result(name, source, reply, selection, notes)
        self.inputs[name] = input_for(request, result, selection)
        await offer_on_load(self, result, self.inputs[name])
        return result

    async def _plan(self, context: LoadedContext) -> tuple[ops.LoadRequest, Selection | None]:
        return await plan_load(context, self.settings, fetched_dir(self.dir))

    # -- run_code ---------------------------------------------------------------------------------

    async def run_code(
        self,
        code: str | None,
        timeout_s: float | None,
        client_session: Any | None = None,
        report: ProgressReport | None = None,
        max_output_chars: int | None = None,
        wait_s: float | None = None,
        interrupt: bool = False,
        stop: anyio.Event | None = None,
    ) -> RunResult:
        """Run a cell, or with no `code` wait for the one running (session/cells.py CellRunner.run_code)."""
        return await self.runner.run_code(
            code, timeout_s, client_session, report, max_output_chars, wait_s, interrupt, stop
        )

    async def forget(self, name: str) -> dict[str, Any]:
        """Code unloaded a context: do not bring it back after a restart, and free what was fetched for it."""
        self.contexts.pop(name, None)
        self.inputs.pop(name, None)
        self.save_record()
        freed = await release_fetched(fetched_dir(self.dir), self.contexts.values())
        return {"ok": True, "freed": freed}

    async def sub_calls(self, calls: list[dict[str, Any]], context: RequestContext, *, confirm: bool) -> dict[str, Any]:
        """A batch of the cell's sub-calls, run concurrently; each failure counted by kind for the result."""
        try:
            results = await self.llm.batch(calls, context.client_session, context.on_done, confirm=confirm)
            self.cell_errors.update(error_kind(str(item.get("error"))) for item in results if not item.get("ok"))
            return {"ok": True, "results": results}
        except SubCallError as exc:  # the batch could not start: one error for all of it
            self.llm.usage.failures += 1
            return {"ok": False, "error": str(exc), "kind": exc.kind}

    # -- what runs no cell: a sub-query, an expression's text, the reports (session/queries.py) -------------

    async def sub_query(
        self,
        prompt: str,
        context: str | None,
        model: str | None,
        max_tokens: int | None,
        client_session: Any | None = None,
    ) -> SubQueryResult:
        return await self.queries.sub_query(prompt, context, model, max_tokens, client_session)

    async def text_of(self, expression: str) -> str:
        return await self.queries.text_of(expression)

    def usage(self) -> dict[str, Any]:
        return self.queries.usage()

    async def info(self) -> dict[str, Any]:
        return await self.queries.info()

    async def sandbox_layers(self) -> list[dict[str, Any]]:
        return await self.queries.sandbox_layers()

    # -- worker lifecycle -------------------------------------------------------------------------

    async def prepare(self) -> None:
        """Start the worker before the first call needs it (the server does this for stdio's one session)."""
        async with self.lock:
            await self.worker.prepare()

    def note_child(self, record: dict[str, Any]) -> None:
        """Keep what a child RLM did (its own children nested in it), the latest MAX_CHILD_RECORDS."""
        self.child_records.append(record)
        del self.child_records[:-MAX_CHILD_RECORDS]

    async def close(self) -> None:
        """Stop the worker, then distil the session's work if distillation is on-close; the session's
        directory stays, so it can be resumed (see SessionStore)."""
        await self.worker.client.close()
        await release_fetched(fetched_dir(self.dir), everything=True)
        await distill_on_close(self)


# -- the session's own services (session/services.py registers them with the rest at assembly) ----------------


async def serve_llm(session: Session, request: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    """The reply to a worker's {"op": "llm", "calls": [...]}: the batch, behavior-conditioned if asked."""
    calls = request.get("calls")
    if not isinstance(calls, list) or not all(valid_call(c) for c in calls):
        return {"ok": False, "error": f"malformed request from the worker: op {ops.LLM!r}"}
    if request.get("behaviors") is True or session.settings.behavior_sub_calls:
        calls = await conditioned(session, calls)
    return await session.sub_calls(calls, context, confirm=request.get("confirm") is True)


async def serve_forget(session: Session, request: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    """The reply to a worker's {"op": "forget", "name": ...}: unload() in code."""
    return await session.forget(str(request.get("name")))
