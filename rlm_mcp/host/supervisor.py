"""One session's worker, kept alive: every operation reaches it through `WorkerSupervisor.call`.

A worker dies (killed at a time limit, crashed, OOM-killed, or gone since the last call) and the session
must go on: the supervisor then starts a fresh worker, reloads every loaded context (planned again against
today's roots), restores the variables of the last snapshot whose digests the signed record holds, and
returns notes that say exactly what survived. Every operation (a load, a cell, a sub-query's context, the
info resource) gets the same treatment, so none can leave a dead worker behind or swallow what was lost.

The supervisor holds the session's one handle on its worker (`client`, host/client.py) but none of the
session's state: it reads the contexts to reload through a callable, and says which could not be reloaded
through a callback, so that only the session changes what it holds. The snapshot's digests are its own.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

import anyio

from rlm_mcp.bridge import ops
from rlm_mcp.config import Settings
from rlm_mcp.errors import UserError, WorkerStartError
from rlm_mcp.host.client import WorkerClient
from rlm_mcp.host.worker_host import CallOutcome
from rlm_mcp.sandbox.policy import model_note, summary
from rlm_mcp.units import MiB

log = logging.getLogger(__name__)

LOST_FATES = ("killed", "crashed")
# Restoring unpickles what code saved, and a value can make that never end (a __reduce__ that sleeps): past
# this, the worker is interrupted and keeps what it restored before. A bound of its own, far below a long
# cell's max_timeout_s: legitimate restores (at most snapshot_max_mb of pickles, modules re-imported) take seconds.
RESTORE_TIMEOUT_S = 120.0

ReplyT = TypeVar("ReplyT")
Operation = Callable[[WorkerClient], Awaitable[CallOutcome[ReplyT]]]


class Reloadable(Protocol):
    """A loaded context as the supervisor sees it: a name (session/loading.py LoadedContext)."""

    @property
    def name(self) -> str: ...


class WorkerSupervisor:
    """`contexts()`: the session's loaded contexts, to reload after a restart; `plan(context)` makes the
    load that brings one back; `unloadable(name)` tells the session one could not be reloaded (it drops
    it); `save_record()` writes the session's signed record after a recovery changed it. `digests`: the
    snapshot's, from the record of a resumed session."""

    def __init__(
        self,
        session_id: str,
        client: WorkerClient,
        settings: Settings,
        *,
        contexts: Callable[[], Iterable[Reloadable]],
        plan: Callable[[Any], Awaitable[tuple[ops.LoadRequest, Any]]],
        unloadable: Callable[[str], None],
        save_record: Callable[[], None],
        resuming: bool,
        digests: dict[str, str] | None = None,
    ) -> None:
        self.session_id = session_id
        self.client = client
        self.settings = settings
        self.contexts = contexts
        self.plan = plan
        self.unloadable = unloadable
        self.save_record = save_record
        self.snapshot_digests: dict[str, str] = dict(digests or {})  # variable -> digest of its snapshot file
        self.resuming = resuming
        self._early_notes: list[str] = []  # from a worker started before any call (prepare), for the first one

    @property
    def grace(self) -> float:
        return self.settings.interrupt_grace_s

    async def call(
        self, operation: Operation[ReplyT], *, watch: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[CallOutcome[ReplyT], list[str]]:
        """Make sure a worker is alive, run `operation` on it (e.g. `lambda worker: worker.variables()`),
        and recover if the worker died of it. `watch` runs alongside (it may stop the worker); the notes say
        what was started, reloaded or lost."""
        notes = await self.ensure()
        outcome: CallOutcome[ReplyT] | None = None
        async with anyio.create_task_group() as group:
            if watch is not None:
                group.start_soon(watch)
            outcome = await operation(self.client)
            group.cancel_scope.cancel()
        assert outcome is not None
        if outcome.fate in LOST_FATES:
            notes += await self.recover()
        return outcome, notes

    async def prepare(self) -> None:
        """Start the worker before the first call needs it; what its start would have told the model is
        kept for that first call."""
        if self.client.alive:
            return
        try:
            self._early_notes = await self.ensure()
        except WorkerStartError as exc:  # the first call starts it again and reports why it cannot
            log.warning("could not start the REPL worker in advance: %s", exc)

    async def ensure_keeping_notes(self) -> None:
        """Make sure a worker is alive, keeping what its start or recovery says for the next call."""
        self._early_notes += await self.ensure()

    async def ensure(self) -> list[str]:
        if self.client.alive:
            notes, self._early_notes = self._early_notes, []
            return notes
        if self.client.starts == 0 and not self.resuming:
            await self._start()
            if any(not layer["active"] for layer in self.client.sandbox):
                log.warning("%s (`rlm-mcp doctor` says more)", summary(self.client.sandbox))  # for the operator
            told = model_note(self.client.sandbox)  # for the model: what its code can do that it should not
            return [told] if told else []
        if self.resuming:
            self.resuming = False
            return [f"resumed session {self.session_id}", *await self.recover()]
        return ["the worker had stopped since the last call", *await self.recover()]

    def note_snapshot(self, saved: dict[str, str], dropped: Iterable[str]) -> None:
        """What the worker reported after a cell: the variables it saved (name -> digest, checked by the
        caller), and those it removed or could not save, which a restart would not bring back."""
        self.snapshot_digests.update(saved)
        for name in dropped:
            self.snapshot_digests.pop(name, None)

    async def _start(self) -> None:
        await self.client.start()
        await self.client.persist(self.client.scratch_dir / "snapshot", self.settings.snapshot_max_mb * MiB)

    async def recover(self) -> list[str]:
        """Start a fresh worker, reload every context, and restore the variables' last snapshot."""
        await self._start()
        reloaded, failed = [], []
        for loaded in list(self.contexts()):
            try:
                load, _ = await self.plan(loaded)
            except UserError as exc:
                failed.append(f"{loaded.name} ({exc})")
                self.unloadable(loaded.name)
                continue
            outcome = await self.client.load(load, timeout=self.settings.max_timeout_s)
            if outcome.fate == "ok" and (outcome.reply or {}).get("ok"):
                reloaded.append(loaded.name)
            else:
                failed.append(loaded.name)
                self.unloadable(loaded.name)
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
        timeout = min(self.settings.max_timeout_s, RESTORE_TIMEOUT_S)
        outcome = await self.client.restore(self.snapshot_digests, timeout=timeout)
        reply = outcome.reply or ops.RestoreReply()
        if outcome.fate not in ("ok", "interrupted") or not reply.get("ok"):
            self.snapshot_digests = {}
            return [f"variables could not be restored ({outcome.cause or reply.get('error')}); they are lost"]
        notes = []
        if reply.get("restored"):
            notes.append("variables restored from the last successful cell: " + ", ".join(reply["restored"]))
        lost = reply.get("lost") or {}
        if lost:
            notes.append("variables lost: " + "; ".join(f"{name} ({why})" for name, why in lost.items()))
            for name in lost:
                self.snapshot_digests.pop(name, None)
        return notes
