"""The server's one handle on a REPL worker: a method per operation the host asks of it, typed both ways.

`WorkerHost` (worker_host.py) keeps the process, the frames and the four fates of a call; this wraps it so
that no caller builds a request by hand: each method takes the operation's arguments, builds the message
`bridge/ops.py` declares, and returns the host's `CallOutcome` with the operation's reply type (every call
can end in a timeout or a crash, so the outcome, not a bare reply). The worker's reply is still untrusted:
the TypedDict says what it should hold, and callers check the fields they read (session/results.py).

The start handshake stays in WorkerHost.start, which spawns the process the start frame configures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from rlm_mcp.bridge import ops
from rlm_mcp.host.worker_host import CallOutcome, RequestHandler, ScratchUsage, WorkerHost


class WorkerClient:
    """One worker's operations. `grace`: how long an overrunning call's code has to stop once interrupted
    before the worker is killed (the server's --interrupt-grace-s)."""

    def __init__(self, host: WorkerHost, grace: float) -> None:
        self.host = host
        self.grace = grace

    async def _call(
        self, request: dict[str, Any], timeout: float | None, on_request: RequestHandler | None = None
    ) -> CallOutcome[Any]:
        return await self.host.call(request, timeout=timeout, grace=self.grace, on_request=on_request)

    # -- the operations (bridge/ops.py HOST_REQUESTS) -------------------------------------------------------

    async def exec(
        self, code: str, cell: int, output_limit: int, *, timeout: float, on_request: RequestHandler | None = None
    ) -> CallOutcome[ops.ExecReply]:
        """Run a cell; `on_request` answers what its code asks the server meanwhile (sub-calls, maps...)."""
        request = ops.ExecRequest(op=ops.EXEC, code=code, cell=cell, output_limit=output_limit)
        return cast("CallOutcome[ops.ExecReply]", await self._call(dict(request), timeout, on_request))

    async def load(self, load: ops.LoadRequest, *, timeout: float) -> CallOutcome[ops.LoadReply]:
        """Bind a context as session/loading.py planned it (the load's fields; the op is added here)."""
        return cast("CallOutcome[ops.LoadReply]", await self._call({**load, "op": ops.LOAD}, timeout))

    async def unload(self, name: str, *, timeout: float = 10) -> CallOutcome[ops.Reply]:
        request = ops.UnloadRequest(op=ops.UNLOAD, name=name)
        return cast("CallOutcome[ops.Reply]", await self._call(dict(request), timeout))

    async def eval_text(self, expression: str, *, timeout: float) -> CallOutcome[ops.EvalTextReply]:
        request = ops.EvalTextRequest(op=ops.EVAL_TEXT, expr=expression)
        return cast("CallOutcome[ops.EvalTextReply]", await self._call(dict(request), timeout))

    async def variables(self, *, timeout: float = 10) -> CallOutcome[ops.VariablesReply]:
        request = ops.VariablesRequest(op=ops.VARIABLES)
        return cast("CallOutcome[ops.VariablesReply]", await self._call(dict(request), timeout))

    async def persist(self, directory: Path, max_bytes: int, *, timeout: float = 10) -> CallOutcome[ops.Reply]:
        """Have the worker snapshot its variables into `directory` after each cell from now on."""
        request = ops.PersistRequest(op=ops.PERSIST, dir=str(directory), max_bytes=max_bytes)
        return cast("CallOutcome[ops.Reply]", await self._call(dict(request), timeout))

    async def restore(self, digests: dict[str, str], *, timeout: float) -> CallOutcome[ops.RestoreReply]:
        """Bring back the snapshotted variables whose files have these digests."""
        request = ops.RestoreRequest(op=ops.RESTORE, digests=dict(digests))
        return cast("CallOutcome[ops.RestoreReply]", await self._call(dict(request), timeout))

    # -- the process (WorkerHost's) -------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.host.alive

    @property
    def starts(self) -> int:
        """How many workers were started for this handle (0: none yet)."""
        return self.host.starts

    @property
    def sandbox(self) -> list[dict[str, Any]]:
        """The last worker's report of its lock-down layers."""
        return self.host.sandbox

    @property
    def scratch_dir(self) -> Path:
        return self.host.scratch_dir

    async def start(self) -> None:
        """Start a fresh worker (the start frame and its ready answer: WorkerHost.start)."""
        await self.host.start()

    def interrupt(self) -> None:
        self.host.interrupt()

    async def kill(self) -> None:
        await self.host.kill()

    async def close(self) -> None:
        await self.host.close()

    def output_so_far(self, limit: int) -> tuple[str, int]:
        return self.host.output_so_far(limit)

    def scratch_usage(self, max_entries: int) -> ScratchUsage:
        return self.host.scratch_usage(max_entries)
