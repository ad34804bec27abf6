"""One session's worker, kept alive: every operation calls it through `WorkerSupervisor.call`.

A worker dies (killed at a time limit, crashed, OOM-killed, or gone since the last call) and the session
must go on: the supervisor then starts a fresh worker, reloads every loaded context (planned again against
today's roots), restores the variables of the last snapshot whose digests the signed record holds, and
returns notes that say exactly what survived. Every operation (a load, a cell, a sub-query's context, the
info resource) gets the same treatment, so none can leave a dead worker behind or swallow what was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

from rlm_mcp.bridge import ops
from rlm_mcp.config import Settings
from rlm_mcp.errors import UserError
from rlm_mcp.host.worker_host import CallOutcome, RequestHandler, WorkerHost, WorkerStartError
from rlm_mcp.sandbox.policy import model_note, summary
from rlm_mcp.units import MiB

log = logging.getLogger(__name__)

LOST_FATES = ("killed", "crashed")
# Restoring unpickles what code saved, and a value can make that never end (a __reduce__ that sleeps): past
# this, the worker is interrupted and keeps what it restored before. A bound of its own, far below a long
# cell's max_timeout_s: legitimate restores (at most snapshot_max_mb of pickles, modules re-imported) take seconds.
RESTORE_TIMEOUT_S = 120.0


class WorkerSupervisor:
    """`contexts`: the session's loaded contexts, by name (shared with the session, pruned here when one
    cannot be reloaded); `plan(context)` makes the worker request that loads one; `save_record()` writes
    the session's signed record after a recovery changed it."""

    def __init__(
        self,
        session_id: str,
        host: WorkerHost,
        settings: Settings,
        contexts: MutableMapping[str, Any],
        plan: Callable[[Any], Awaitable[tuple[dict[str, Any], Any]]],
        save_record: Callable[[], None],
        resuming: bool,
    ) -> None:
        self.session_id = session_id
        self.host = host
        self.settings = settings
        self.contexts = contexts
        self.plan = plan
        self.save_record = save_record
        self.snapshot_digests: dict[str, str] = {}  # variable -> digest of its snapshot file, as the worker reported
        self.resuming = resuming
        self._early_notes: list[str] = []  # from a worker started before any call (prepare), for the first one

    @property
    def grace(self) -> float:
        return self.settings.interrupt_grace_s

    async def call(
        self,
        request: dict[str, Any],
        *,
        timeout: float,
        on_request: RequestHandler | None = None,
        watch: Callable[[], Awaitable[None]] | None = None,
    ) -> tuple[CallOutcome, list[str]]:
        """Make sure a worker is alive, send `request`, and recover if the worker died of it. `watch` runs
        alongside (it may stop the worker); the notes say what was started, reloaded or lost."""
        notes = await self.ensure()
        outcome: CallOutcome | None = None
        async with anyio.create_task_group() as group:
            if watch is not None:
                group.start_soon(watch)
            outcome = await self.host.call(request, timeout=timeout, grace=self.grace, on_request=on_request)
            group.cancel_scope.cancel()
        assert outcome is not None
        if outcome.fate in LOST_FATES:
            notes += await self.recover()
        return outcome, notes

    async def prepare(self) -> None:
        """Start the worker before the first call needs it; what its start would have told the model is
        kept for that first call."""
        if self.host.alive:
            return
        try:
            self._early_notes = await self.ensure()
        except WorkerStartError as exc:  # the first call starts it again and reports why it cannot
            log.warning("could not start the REPL worker in advance: %s", exc)

    async def ensure_keeping_notes(self) -> None:
        """Make sure a worker is alive, keeping what its start or recovery says for the next call."""
        self._early_notes += await self.ensure()

    async def ensure(self) -> list[str]:
        if self.host.alive:
            notes, self._early_notes = self._early_notes, []
            return notes
        if self.host.starts == 0 and not self.resuming:
            await self._start()
            if any(not layer["active"] for layer in self.host.sandbox):
                log.warning("%s (`rlm-mcp doctor` says more)", summary(self.host.sandbox))  # for the operator
            told = model_note(self.host.sandbox)  # for the model: what its code can do that it should not
            return [told] if told else []
        if self.resuming:
            self.resuming = False
            return [f"resumed session {self.session_id}", *await self.recover()]
        return ["the worker had stopped since the last call", *await self.recover()]

    async def _start(self) -> None:
        await self.host.start()
        snapshots = str(self.host.scratch_dir / "snapshot")
        persist = {"op": ops.PERSIST, "dir": snapshots, "max_bytes": self.settings.snapshot_max_mb * MiB}
        await self.host.call(persist, timeout=10, grace=self.grace)

    async def recover(self) -> list[str]:
        """Start a fresh worker, reload every context, and restore the variables' last snapshot."""
        await self._start()
        reloaded, failed = [], []
        for loaded in list(self.contexts.values()):
            try:
                request, _ = await self.plan(loaded)
            except UserError as exc:
                failed.append(f"{loaded.name} ({exc})")
                del self.contexts[loaded.name]
                continue
            outcome = await self.host.call(request, timeout=self.settings.max_timeout_s, grace=self.grace)
            if outcome.fate == "ok" and (outcome.reply or {}).get("ok"):
                reloaded.append(loaded.name)
            else:
                failed.append(loaded.name)
                del self.contexts[loaded.name]
        notes = ["started a fresh worker"]
        if reloaded:
            notes.append("contexts reloaded: " + ", ".join(reloaded))
        if failed:
            notes.append("contexts that could not be reloaded (load them again): " + ", ".join(failed))
        notes += await self._restore_variables()
        self.save_record()
        return notes

    async def _restore_variables(self) -> list[str]:
        if not self.snapshot_digests:
            return ["no variables were saved; those defined since the last snapshot are lost"]
        request = {"op": ops.RESTORE, "digests": self.snapshot_digests}
        timeout = min(self.settings.max_timeout_s, RESTORE_TIMEOUT_S)
        outcome = await self.host.call(request, timeout=timeout, grace=self.grace)
        reply = outcome.reply or {}
        if outcome.fate not in ("ok", "interrupted") or not reply.get("ok"):
            self.snapshot_digests = {}
            return [f"variables could not be restored ({outcome.cause or reply.get('error')}); they are lost"]
        notes = []
        if reply["restored"]:
            notes.append("variables restored from the last successful cell: " + ", ".join(reply["restored"]))
        lost = reply.get("lost") or {}
        if lost:
            notes.append("variables lost: " + "; ".join(f"{name} ({why})" for name, why in lost.items()))
            for name in lost:
                self.snapshot_digests.pop(name, None)
        return notes
