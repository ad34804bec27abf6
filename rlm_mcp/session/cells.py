"""run_code's cells for one session: started in a task of the server's so that they outlive their calls,
awaited up to `wait_s`, stopped on request, and reported while they run (progress, the output so far).

A cell runs under the session's lock, as one exec through the session's supervisor, with the scratch
directory's size watched meanwhile (a cell over the disk cap is stopped); its reply becomes a RunResult
with every note said once (sandbox gaps, unsaved variables, failed sub-calls collapsed, disk use). The
runner keeps the cell in flight and its result until a call takes it; the session keeps the rest.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any, Protocol

import anyio

from rlm_mcp.bridge import ops
from rlm_mcp.config import Settings
from rlm_mcp.errors import UserError
from rlm_mcp.escaping import printable
from rlm_mcp.host.supervisor import Operation, WorkerSupervisor
from rlm_mcp.host.worker_host import CallOutcome
from rlm_mcp.llm.router import SessionLLM, usage_since
from rlm_mcp.session.progress import CellProgress, ProgressReport
from rlm_mcp.session.results import (
    DISK_CHECK_S,
    RUNNING_OUTPUT_CHARS,
    SCRATCH_MAX_ENTRIES,
    cell_usage,
    failures_note,
    lost_result,
    over_disk_cap,
    run_result,
    running_threads,
    text_field,
    valid_snapshot,
)
from rlm_mcp.session.running import RunningCell, Spawn
from rlm_mcp.session.services import RequestContext, Services
from rlm_mcp.tools.schemas import RunResult
from rlm_mcp.trace import Tracer
from rlm_mcp.units import MiB

log = logging.getLogger(__name__)


class CellOwner(Protocol):
    """What the runner uses of its session (session.py Session), named here so that this module does not
    import session.py: its identity, settings, lock, worker, model budget, trace and services; the cell
    count and the running cell's notes and sub-call failures, which the session also keeps and records."""

    id: str
    settings: Settings
    lock: anyio.Lock
    worker: WorkerSupervisor
    llm: SessionLLM
    tracer: Tracer
    services: Services
    spawn: Spawn | None
    cells: int
    calls: int
    cell_notes: list[str]
    cell_errors: Counter[str]

    def save_record(self) -> None: ...


class CellRunner:
    """The session's cells: at most one in flight, and once done, its result until a call takes it."""

    def __init__(self, owner: CellOwner) -> None:
        self.owner = owner
        self.cell: RunningCell | None = None  # started by run_code: running, or done and not yet taken
        self._told_unsaved: set[str] = set()  # unsaved names the model was told of: each is said once

    @property
    def running(self) -> RunningCell | None:
        """The cell still running, if one is."""
        cell = self.cell
        return cell if cell is not None and not cell.done else None

    async def wait_until_idle(self, wait: float) -> None:
        """Let a running cell finish first, up to `wait` seconds: calls on a session are queued, never
        interleaved. One that would wait longer is refused rather than kept past the host's patience, with
        what the cell is doing and how to wait for it or stop it."""
        cell = self.cell
        if cell is None or cell.done:
            return
        if not await cell.wait(wait):
            raise UserError(
                f"{cell.status()}; run_code() without code waits for its result, run_code(interrupt=True) stops it"
            )

    def take_finished(self) -> RunResult | None:
        """The result of a cell that finished after its call returned `running`, if no call is waiting for
        it or has taken it (each is given once, with the next call on the session)."""
        cell = self.cell
        if cell is None or not cell.done or cell.waiters:
            return None
        self.cell = None
        if cell.failure is not None:
            return RunResult(outcome="error", state="kept", cell=cell.number, error=str(cell.failure), elapsed_s=0.0)
        return cell.result

    def _note_snapshot(self, reply: dict[str, Any], notes: list[str]) -> None:
        """Take in what the worker saved after a cell; name what it could not save (each name once)."""
        report = reply.get("snapshot")
        if isinstance(report, dict):
            self._told_unsaved = take_snapshot(self.owner.worker, report, notes, self._told_unsaved)
            self.owner.save_record()  # also after a cell that changed no variable: its number, so a resume goes on

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
        with self.owner.tracer.event("tool", "run_code", arguments=arguments) as event:
            wait = checked_wait(self.owner.settings, wait_s)
            earlier = None
            if code is not None:
                if interrupt:
                    raise UserError("interrupt=True stops the running cell: send it without code, then the new code")
                limit, timeout = checked_limits(self.owner.settings, max_output_chars, timeout_s)
                started = time.monotonic()
                await self.wait_until_idle(wait)
                earlier = self.take_finished()  # a cell that finished with no call waiting for it: said first
                wait = max(0.0, wait - (time.monotonic() - started))
                cell = self._start_cell(code, timeout, limit, client_session)
            elif self.cell is None:
                raise UserError("no cell is running: pass `code` to run one")
            else:
                cell = self.cell
                if interrupt and not cell.done:
                    await self._stop(cell)
            result = await self._await_cell(cell, wait, report, stop)
            result.finished_cell = earlier
            event.set(outcome=result.outcome)
            self.owner.calls += 1
            return result

    def _start_cell(self, code: str, timeout: float, limit: int, client_session: Any | None) -> RunningCell:
        """Start the cell in a task of the server's, so that it goes on when the call that started it ends."""
        if self.owner.spawn is None:
            raise RuntimeError("the session has no task group to run cells in (SessionRegistry.spawn)")
        progress = CellProgress(None, self.owner.settings.progress_interval_s)
        cell = RunningCell(self.owner.cells + 1, progress)

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

        self.cell = cell
        self.owner.spawn(lambda: cell.run(run))
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
            return running_result(cell, self.owner.worker, self.owner.settings)
        if self.cell is cell:
            self.cell = None
        return cell.outcome()

    async def _stop_when_set(self, stop: anyio.Event, cell: RunningCell) -> None:
        await stop.wait()
        await self._stop(cell)

    async def _stop(self, cell: RunningCell) -> None:
        """Interrupt the cell; one that ignores it is killed with its worker after the grace period. Once
        per cell: a second interrupt could land in the worker's own handling of the first."""
        if not cell.stopping:
            cell.stopping = True
            self.owner.worker.client.interrupt()
            if await cell.wait(self.owner.worker.grace + 1):
                return
            await self.owner.worker.client.kill()
        await cell.wait(self.owner.settings.max_timeout_s)

    async def _run_code(
        self,
        number: int,
        code: str,
        timeout: float,
        client_session: Any | None,
        progress: CellProgress,
        limit: int,
    ) -> RunResult:
        async with self.owner.lock:
            self.owner.cells = number
            started = time.perf_counter()
            usage_before = self.owner.llm.usage.model_copy()
            self.owner.cell_errors = Counter()
            self.owner.cell_notes = []
            deadline = time.monotonic() + timeout

            context = RequestContext(client_session, progress.sub_call_done, deadline)

            async def serve(frame: dict[str, Any]) -> dict[str, Any]:
                return await self.owner.services.handle(self.owner, frame, context)

            with self.owner.tracer.event("cell", f"cell {self.owner.cells}", code=code) as cell:
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
            sub_calls = cell_usage(usage_since(self.owner.llm.usage, usage_before))
            if sub_calls and sub_calls.failures:
                notes.append(failures_note(sub_calls.failures, self.owner.cell_errors))
            if over_disk:
                notes.append(over_disk)
            notes.extend(self.owner.cell_notes)
            result = None
            if outcome.fate not in ("killed", "crashed"):
                notes.extend(running_threads(reply.get("threads")))
                if not over_disk:
                    notes.extend(await disk_notes(self.owner.worker, self.owner.settings))
                try:
                    self._note_snapshot(reply, notes)
                    result = run_result(outcome, elapsed, notes)
                except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
                    log.warning("session %s: malformed reply from the worker (%s); replacing it", self.owner.id, exc)
                    await self.owner.worker.client.kill()
                    outcome = CallOutcome("crashed", cause="the worker sent a malformed reply (protocol violation)")
                    notes += await self.owner.worker.recover()
            if result is None:  # the worker died of this cell: the supervisor has recovered what it could
                result = lost_result(outcome, elapsed, notes, limit)
                result.state = "restored" if self.owner.worker.snapshot_digests else "lost"
                result.restored = sorted(self.owner.worker.snapshot_digests)  # the variables brought back
        result.sub_calls = sub_calls
        result.cell = number
        return result

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
                why = await scratch_over_cap(self.owner.worker, self.owner.settings)
                if why:
                    stopped.append("stopped: " + why)
                    self.owner.worker.client.interrupt()
                    await anyio.sleep(self.owner.worker.grace)
                    await self.owner.worker.client.kill()
                    return

        outcome, notes = await self.owner.worker.call(run, watch=watch)
        return outcome, notes, "".join(stopped)


# -- what a cell's calls check, and what the disk cap sees ---------------------------------------------------------


def checked_wait(settings: Settings, wait_s: float | None) -> float:
    wait = settings.wait_s if wait_s is None else wait_s
    if not 0 <= wait <= settings.max_timeout_s and wait != math.inf:
        raise UserError(
            f"wait_s must be from 0 to {settings.max_timeout_s:g} seconds; a cell still running then "
            "answers `running`, and run_code() without code waits for it again"
        )
    return wait


def checked_limits(settings: Settings, max_output_chars: int | None, timeout_s: float | None) -> tuple[int, float]:
    cap = settings.max_output_chars
    limit = cap if max_output_chars is None else max_output_chars
    if not 0 < limit <= cap:
        raise UserError(
            f"max_output_chars must be above 0 and at most {cap:,} (the server's --max-output-chars); "
            "read more of a long output by slicing _out or _outs[n]"
        )
    timeout = settings.timeout_s if timeout_s is None else timeout_s
    if not 0 < timeout <= settings.max_timeout_s:
        raise UserError(
            f"timeout_s must be above 0 and at most {settings.max_timeout_s:g} "
            "(the server's --max-timeout-s); split long work over several calls"
        )
    return limit, timeout


def running_result(cell: RunningCell, worker: WorkerSupervisor, settings: Settings) -> RunResult:
    shown = min(RUNNING_OUTPUT_CHARS, settings.max_output_chars)
    stdout, stdout_chars = worker.client.output_so_far(shown)
    return RunResult(
        outcome="running",
        state="kept",
        cell=cell.number,
        stdout=stdout,
        stdout_chars=stdout_chars,
        elapsed_s=cell.elapsed_s,
        notes=[cell.status()],
    )


async def scratch_over_cap(worker: WorkerSupervisor, settings: Settings) -> str:
    """Why the scratch directory is over its caps, or "" if it is not (walked in a thread: it may be big)."""
    usage = await anyio.to_thread.run_sync(worker.client.scratch_usage, SCRATCH_MAX_ENTRIES)
    used, entries, unnamed = usage.bytes, usage.entries, usage.unnamed
    cap = settings.disk_limit_mb * MiB
    if usage.unseen:  # what the server cannot see counts as over the cap
        return f"the working directory cannot be measured: {usage.unseen}"
    if used > cap:
        return over_disk_cap(used, unnamed, usage.descriptors, settings.disk_limit_mb)
    if entries > SCRATCH_MAX_ENTRIES:
        return f"the working directory holds over {SCRATCH_MAX_ENTRIES:,} files and directories; delete some"
    return ""


async def disk_notes(worker: WorkerSupervisor, settings: Settings) -> list[str]:
    why = await scratch_over_cap(worker, settings)
    return [why + "; while it stays over, every cell is stopped within a second"] if why else []


def take_snapshot(worker: WorkerSupervisor, report: dict[str, Any], notes: list[str], told: set[str]) -> set[str]:
    """Hand the supervisor what the worker saved after a cell, and note the variables it could not save
    that the model was not `told` of yet; returns the names told from now on (those still unsaved)."""
    worker.note_snapshot(valid_snapshot(report.get("saved")), [*report.get("removed", []), *report.get("unsaved", {})])
    unsaved = report.get("unsaved") if isinstance(report.get("unsaved"), dict) else {}
    news = {str(name): why for name, why in unsaved.items() if str(name) not in told}
    if news:
        listed = "; ".join(
            f"{printable(name, 80)} ({printable(str(why), 160)})" for name, why in list(news.items())[:10]
        )
        notes.append(f"not saved for recovery (lost if the worker restarts): {listed}")
    return (told | set(news)) & {str(name) for name in unsaved}  # once a name
