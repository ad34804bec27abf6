"""A session: one client's REPL worker, its loaded contexts, and the rules for keeping them alive.

The MCP layer calls into a Session and never touches the worker directly. A session serialises its calls
(a REPL runs one cell at a time), and after any worker death it starts a fresh worker and reloads every
context before answering, so the model is told exactly what survived.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any

import anyio

from rlm_mcp.bridge import ops
from rlm_mcp.config import Settings
from rlm_mcp.contexts.selection import Selection
from rlm_mcp.errors import ContextError, SubCallError, UserError
from rlm_mcp.escaping import printable
from rlm_mcp.host.client import WorkerClient
from rlm_mcp.host.factory import fetched_dir, session_worker_host
from rlm_mcp.host.supervisor import Operation, WorkerSupervisor
from rlm_mcp.host.worker_host import CallOutcome
from rlm_mcp.llm.router import Router, SessionLLM, usage_since
from rlm_mcp.memory.inputs import InputRef
from rlm_mcp.sandbox.policy import summary
from rlm_mcp.session.learning import conditioned, distill_on_close, input_for, offer_on_load
from rlm_mcp.session.loading import LoadedContext, check_context_name, plan_load, release_fetched
from rlm_mcp.session.progress import CellProgress, ProgressReport
from rlm_mcp.session.results import (
    DISK_CHECK_S,
    RUNNING_OUTPUT_CHARS,
    SCRATCH_MAX_ENTRIES,
    cell_usage,
    error_kind,
    failures_note,
    load_result,
    lost_result,
    over_disk_cap,
    run_result,
    running_threads,
    text_field,
    valid_call,
    valid_snapshot,
)
from rlm_mcp.session.running import RunningCell, Spawn
from rlm_mcp.session.services import RequestContext, Services
from rlm_mcp.session.store import SessionStore
from rlm_mcp.tools.schemas import LoadResult, RunResult, SubQueryResult
from rlm_mcp.trace import Tracer
from rlm_mcp.units import MiB

log = logging.getLogger(__name__)

MAX_CHILD_RECORDS = 200


# size: being split (issue 27): the worker-request registry first
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
        self._told_unsaved: set[str] = set()  # unsaved names the model was told of: each is said once
        self._cell_errors: Counter[str] = Counter()  # why the running cell's sub-calls failed, each counted
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
            save_record=self._save_record,
            resuming=record is not None,
            digests=digests,
        )
        self._lock = anyio.Lock()
        self.last_used = time.monotonic()
        self.calls = 0  # tool calls that passed validation: a session none has used is closed soon
        self.spawn = spawn
        self._cell: RunningCell | None = None  # a cell started by run_code: running, or done and not yet taken

    @property
    def busy(self) -> bool:
        return self._lock.locked() or (self._cell is not None and not self._cell.done)

    async def _wait_until_idle(self, wait: float) -> None:
        """Let a running cell finish first, up to `wait` seconds: calls on a session are queued, never
        interleaved. One that would wait longer is refused rather than kept past the host's patience, with
        what the cell is doing and how to wait for it or stop it."""
        cell = self._cell
        if cell is None or cell.done:
            return
        if not await cell.wait(wait):
            raise UserError(
                f"{cell.status()}; run_code() without code waits for its result, run_code(interrupt=True) stops it"
            )

    def take_finished(self) -> RunResult | None:
        """The result of a cell that finished after its call returned `running`, if no call is waiting for
        it or has taken it (each is given once, with the next call on the session)."""
        cell = self._cell
        if cell is None or not cell.done or cell.waiters:
            return None
        self._cell = None
        if cell.failure is not None:
            return RunResult(outcome="error", state="kept", cell=cell.number, error=str(cell.failure), elapsed_s=0.0)
        return cell.result

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

    def _save_record(self) -> None:
        if self.ephemeral:
            return
        contexts = [context.as_record() for context in self.contexts.values()]
        digests = self.worker.snapshot_digests
        self.store.save(self.id, {"contexts": contexts, "snapshot": digests, "cells": self.cells})

    def _note_snapshot(self, reply: dict[str, Any], notes: list[str]) -> None:
        """Take in what the worker saved after a cell; name what it could not save."""
        report = reply.get("snapshot")
        if not isinstance(report, dict):
            return
        self.worker.note_snapshot(
            valid_snapshot(report.get("saved")), [*report.get("removed", []), *report.get("unsaved", {})]
        )
        unsaved = report.get("unsaved") if isinstance(report.get("unsaved"), dict) else {}
        news = {str(name): why for name, why in unsaved.items() if str(name) not in self._told_unsaved}
        self._told_unsaved = (self._told_unsaved | set(news)) & {str(name) for name in unsaved}  # once a name
        if news:
            listed = "; ".join(
                f"{printable(name, 80)} ({printable(str(why), 160)})" for name, why in list(news.items())[:10]
            )
            notes.append(f"not saved for recovery (lost if the worker restarts): {listed}")
        self._save_record()  # also after a cell that changed no variable: its number, so a resumed session goes on

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
        await self._wait_until_idle(self.settings.wait_s)
        if [path, text, value].count(None) != 2:
            raise UserError("give exactly one of `path` (a file, directory or glob) or `text` (small inline input)")
        wanted = LoadedContext(name, path, text, tuple(exclude or ()), "", value)
        request, selection = await self._plan(wanted)
        source = wanted.source

        async with self._lock:
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
            self._save_record()
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
        """Run a cell, or with no `code` wait for the one running, answering within `wait_s` either way
        (`running` if it is not done; see running.py). `client_session` is the MCP session of the calling
        client, for sampling sub-calls; `report(progress, message)` receives progress while this call waits;
        `max_output_chars` lowers the server's cap on stdout and stderr; `interrupt` stops the running cell;
        `stop` is set when the client cancels this call, which stops the cell too (a call that ends because
        the client went away leaves it running)."""
        shown_wait = None if wait_s is None or math.isinf(wait_s) else wait_s  # the trace is strict JSON
        arguments = {
            "code": code,
            "timeout_s": timeout_s,
            "wait_s": shown_wait,
            "interrupt": interrupt,
            "max_output_chars": max_output_chars,  # replay re-runs the cell with the same cap on its output
        }
        with self.tracer.event("tool", "run_code", arguments=arguments) as event:
            wait = self._checked_wait(wait_s)
            earlier = None
            if code is not None:
                if interrupt:
                    raise UserError("interrupt=True stops the running cell: send it without code, then the new code")
                limit, timeout = self._checked_limits(max_output_chars, timeout_s)
                started = time.monotonic()
                await self._wait_until_idle(wait)
                earlier = self.take_finished()  # a cell that finished with no call waiting for it: said first
                wait = max(0.0, wait - (time.monotonic() - started))
                cell = self._start_cell(code, timeout, limit, client_session)
            elif self._cell is None:
                raise UserError("no cell is running: pass `code` to run one")
            else:
                cell = self._cell
                if interrupt and not cell.done:
                    await self._stop(cell)
            result = await self._await_cell(cell, wait, report, stop)
            result.finished_cell = earlier
            event.set(outcome=result.outcome)
            self.calls += 1
            return result

    def _checked_wait(self, wait_s: float | None) -> float:
        wait = self.settings.wait_s if wait_s is None else wait_s
        if not 0 <= wait <= self.settings.max_timeout_s and wait != math.inf:
            raise UserError(
                f"wait_s must be from 0 to {self.settings.max_timeout_s:g} seconds; a cell still running then "
                "answers `running`, and run_code() without code waits for it again"
            )
        return wait

    def _checked_limits(self, max_output_chars: int | None, timeout_s: float | None) -> tuple[int, float]:
        cap = self.settings.max_output_chars
        limit = cap if max_output_chars is None else max_output_chars
        if not 0 < limit <= cap:
            raise UserError(
                f"max_output_chars must be above 0 and at most {cap:,} (the server's --max-output-chars); "
                "read more of a long output by slicing _out or _outs[n]"
            )
        timeout = self.settings.timeout_s if timeout_s is None else timeout_s
        if not 0 < timeout <= self.settings.max_timeout_s:
            raise UserError(
                f"timeout_s must be above 0 and at most {self.settings.max_timeout_s:g} "
                "(the server's --max-timeout-s); split long work over several calls"
            )
        return limit, timeout

    def _start_cell(self, code: str, timeout: float, limit: int, client_session: Any | None) -> RunningCell:
        """Start the cell in a task of the server's, so that it goes on when the call that started it ends."""
        if self.spawn is None:
            raise RuntimeError("the session has no task group to run cells in (SessionRegistry.spawn)")
        progress = CellProgress(None, self.settings.progress_interval_s)
        cell = RunningCell(self.cells + 1, progress)

        async def run() -> RunResult:
            async with anyio.create_task_group() as group:
                group.start_soon(progress.heartbeat)
                try:
                    result = await self._run_code(cell.number, code, timeout, client_session, progress, limit)
                finally:
                    group.cancel_scope.cancel()
            if cell.stopping and result.outcome == "error" and result.error_type == "KeyboardInterrupt":
                result.outcome = "interrupted"
                result.notes.append("stopped as asked (interrupt=True, or the call was cancelled); REPL state kept")
            return result

        self._cell = cell
        self.spawn(lambda: cell.run(run))
        return cell

    async def _await_cell(
        self,
        cell: RunningCell,
        wait: float,
        report: ProgressReport | None,
        stop: anyio.Event | None,
    ) -> RunResult:
        """Wait for the cell up to `wait` seconds, or until `stop` is set (the client cancelled the call, or
        the task it runs as): then the cell is stopped and its result given now, or with the next call if
        this one is cancelled too."""
        cell.progress.report = report
        cell.waiters += 1
        try:
            with anyio.move_on_after(wait):
                async with anyio.create_task_group() as group:
                    if stop is not None:
                        group.start_soon(self._stop_when_set, stop, cell)
                    await cell.wait(math.inf)
                    group.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            if stop is not None and stop.is_set():
                with anyio.CancelScope(shield=True):
                    await self._stop(cell)
            raise
        finally:
            cell.waiters -= 1
            if cell.progress.report is report:
                cell.progress.report = None
        if not cell.done:
            return self._running_result(cell)
        if self._cell is cell:
            self._cell = None
        return cell.outcome()

    async def _stop_when_set(self, stop: anyio.Event, cell: RunningCell) -> None:
        await stop.wait()
        await self._stop(cell)

    async def _stop(self, cell: RunningCell) -> None:
        """Interrupt the cell; one that ignores it is killed with its worker after the grace period. Once
        per cell: a second interrupt could land in the worker's own handling of the first."""
        if not cell.stopping:
            cell.stopping = True
            self.worker.client.interrupt()
            if await cell.wait(self.worker.grace + 1):
                return
            await self.worker.client.kill()
        await cell.wait(self.settings.max_timeout_s)

    def _running_result(self, cell: RunningCell) -> RunResult:
        shown = min(RUNNING_OUTPUT_CHARS, self.settings.max_output_chars)
        stdout, stdout_chars = self.worker.client.output_so_far(shown)
        return RunResult(
            outcome="running",
            state="kept",
            cell=cell.number,
            stdout=stdout,
            stdout_chars=stdout_chars,
            elapsed_s=cell.elapsed_s,
            notes=[cell.status()],
        )

    async def _run_code(
        self,
        number: int,
        code: str,
        timeout: float,
        client_session: Any | None,
        progress: CellProgress,
        limit: int,
    ) -> RunResult:
        async with self._lock:
            self.cells = number
            started = time.perf_counter()
            usage_before = self.llm.usage.model_copy()
            self._cell_errors = Counter()
            self.cell_notes = []
            deadline = time.monotonic() + timeout

            context = RequestContext(client_session, progress.sub_call_done, deadline)

            async def serve(frame: dict[str, Any]) -> dict[str, Any]:
                return await self.services.handle(self, frame, context)

            with self.tracer.event("cell", f"cell {self.cells}", code=code) as cell:
                outcome, notes, over_disk = await self._call_watching_disk(
                    lambda worker: worker.exec(code, number, limit, timeout=timeout, on_request=serve)
                )
                reply = outcome.reply or {}
                cell.set(
                    outcome=outcome.fate if outcome.fate != "ok" else ("error" if reply.get("error") else "ok"),
                    stdout=text_field(reply.get("stdout")),
                    stderr=text_field(reply.get("stderr")) or outcome.stderr_tail,
                    result=text_field(reply.get("result")),
                    error=text_field(reply.get("error")) or outcome.cause or None,
                    error_type=reply.get("error_type"),  # what telemetry may say of it without --otel-texts
                )
            elapsed = time.perf_counter() - started
            sub_calls = cell_usage(usage_since(self.llm.usage, usage_before))
            if sub_calls and sub_calls.failures:
                notes.append(failures_note(sub_calls.failures, self._cell_errors))
            if over_disk:
                notes.append(over_disk)
            notes.extend(self.cell_notes)
            result = None
            if outcome.fate not in ("killed", "crashed"):
                notes.extend(running_threads(reply.get("threads")))
                if not over_disk:
                    notes.extend(await self._disk_notes())
                try:
                    self._note_snapshot(reply, notes)
                    result = run_result(outcome, elapsed, notes)
                except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
                    log.warning("session %s: malformed reply from the worker (%s); replacing it", self.id, exc)
                    await self.worker.client.kill()
                    outcome = CallOutcome("crashed", cause="the worker sent a malformed reply (protocol violation)")
                    notes += await self.worker.recover()
            if result is None:  # the worker died of this cell: the supervisor has recovered what it could
                result = lost_result(outcome, elapsed, notes, limit)
                result.state = "restored" if self.worker.snapshot_digests else "lost"
                result.restored = sorted(self.worker.snapshot_digests)  # the variables brought back
        result.sub_calls = sub_calls
        result.cell = number
        return result

    async def _scratch_over_cap(self) -> str:
        """Why the scratch directory is over its caps, or "" if it is not (walked in a thread: it may be big)."""
        usage = await anyio.to_thread.run_sync(self.worker.client.scratch_usage, SCRATCH_MAX_ENTRIES)
        used, entries, unnamed = usage.bytes, usage.entries, usage.unnamed
        cap = self.settings.disk_limit_mb * MiB
        if usage.unseen:  # what the server cannot see counts as over the cap
            return f"the working directory cannot be measured: {usage.unseen}"
        if used > cap:
            return over_disk_cap(used, unnamed, usage.descriptors, self.settings.disk_limit_mb)
        if entries > SCRATCH_MAX_ENTRIES:
            return f"the working directory holds over {SCRATCH_MAX_ENTRIES:,} files and directories; delete some"
        return ""

    async def _disk_notes(self) -> list[str]:
        why = await self._scratch_over_cap()
        return [why + "; while it stays over, every cell is stopped within a second"] if why else []

    async def _call_watching_disk(
        self, run: Operation[ops.ExecReply]
    ) -> tuple[CallOutcome[ops.ExecReply], list[str], str]:
        """Run a cell, checking the scratch directory every DISK_CHECK_S; one over its cap is stopped
        (interrupted, then killed after the grace period). Returns the outcome, the supervisor's notes and
        why it was stopped."""
        stopped: list[str] = []

        async def watch() -> None:
            while True:
                await anyio.sleep(DISK_CHECK_S)
                why = await self._scratch_over_cap()
                if why:
                    stopped.append("stopped: " + why)
                    self.worker.client.interrupt()
                    await anyio.sleep(self.worker.grace)
                    await self.worker.client.kill()
                    return

        outcome, notes = await self.worker.call(run, watch=watch)
        return outcome, notes, "".join(stopped)

    async def forget(self, name: str) -> dict[str, Any]:
        """Code unloaded a context: do not bring it back after a restart, and free what was fetched for it."""
        self.contexts.pop(name, None)
        self.inputs.pop(name, None)
        self._save_record()
        freed = await release_fetched(fetched_dir(self.dir), self.contexts.values())
        return {"ok": True, "freed": freed}

    async def sub_calls(self, calls: list[dict[str, Any]], context: RequestContext, *, confirm: bool) -> dict[str, Any]:
        """A batch of the cell's sub-calls, run concurrently; each failure counted by kind for the result."""
        try:
            results = await self.llm.batch(calls, context.client_session, context.on_done, confirm=confirm)
            self._cell_errors.update(error_kind(str(item.get("error"))) for item in results if not item.get("ok"))
            return {"ok": True, "results": results}
        except SubCallError as exc:  # the batch could not start: one error for all of it
            self.llm.usage.failures += 1
            return {"ok": False, "error": str(exc), "kind": exc.kind}

    # -- sub_query --------------------------------------------------------------------------------

    async def sub_query(
        self,
        prompt: str,
        context: str | None,
        model: str | None,
        max_tokens: int | None,
        client_session: Any | None = None,
    ) -> SubQueryResult:
        arguments = {"prompt": prompt, "context": context, "model": model, "max_tokens": max_tokens}
        with self.tracer.event("tool", "sub_query", arguments=arguments) as event:
            result = await self._sub_query(prompt, context, model, max_tokens, client_session)
            event.set(outcome="ok")
            self.calls += 1
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
        try:
            backend = await self.llm.router.backend_for(client_session)
            call = self.llm.make_call(backend, prompt, None, model, max_tokens)
            answer = await self.llm.complete(call, backend)
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
            session_usage=self.llm.usage.model_copy(),
        )

    async def text_of(self, expression: str) -> str:
        """An expression of the REPL's (e.g. `chunks[3]`, `answer`) evaluated there, as text."""
        await self._wait_until_idle(self.settings.wait_s)
        async with self._lock:
            timeout = self.settings.timeout_s
            outcome, notes = await self.worker.call(lambda worker: worker.eval_text(expression, timeout=timeout))
            reply = outcome.reply or {}
            if not reply.get("ok") or not isinstance(reply.get("text"), str):
                why = reply.get("error") or outcome.cause
                said = f" ({'; '.join(notes)})" if notes else ""
                raise UserError(f"the context expression {expression!r} failed: {why}{said}")
            return str(reply["text"])

    # -- worker lifecycle -------------------------------------------------------------------------

    def usage(self) -> dict[str, Any]:
        """Sub-call usage and cost, for the session and per model (the same figures the trace holds)."""
        return {
            "session": self.id,
            "total": self.llm.usage.model_dump(),
            "by_model": {model: usage.model_dump() for model, usage in self.llm.usage_by_model.items()},
            "children": self.child_records,
        }

    async def info(self) -> dict[str, Any]:
        """What the session holds and what it may still do: contexts, variables, budget left, sandbox."""
        budget = self.llm.budget
        cell = self._cell
        variables: Any = None  # not while a cell runs: the worker is busy
        if cell is None or cell.done:
            async with self._lock:
                outcome, _ = await self.worker.call(lambda worker: worker.variables())
            variables = (outcome.reply or {}).get("variables", [])
        return {
            "session": self.id,
            "running": cell.status() if cell is not None and not cell.done else None,
            "contexts": [{"name": c.name, "source": c.source} for c in self.contexts.values()],
            "variables": variables,
            "cells": self.cells,
            "budget_left": {
                "sub_calls": budget.max_calls - budget.calls,
                "tokens": None if budget.max_tokens is None else budget.max_tokens - budget.tokens,
                "cost_usd": None if budget.max_cost is None else round(budget.max_cost - budget.cost, 6),
            },
            "sandbox": summary(self.worker.client.sandbox),
            "trace": str(self.tracer.path),
        }

    async def sandbox_layers(self) -> list[dict[str, Any]]:
        """The running worker's report of its lock-down (starting the worker if there is none yet)."""
        client = self.worker.client
        if client.sandbox and client.alive:
            return list(client.sandbox)
        async with self._lock:
            await self.worker.ensure_keeping_notes()
            return list(client.sandbox)

    async def prepare(self) -> None:
        """Start the worker before the first call needs it (the server does this for stdio's one session)."""
        async with self._lock:
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
