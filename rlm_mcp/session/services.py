"""What a session's worker may ask the server: a registry {op: handler}, filled once at assembly.

The worker's code asks for sub-calls (llm), child RLMs (rlm), the workspace memory (memory), maps on a
cluster (map) and the release of a context (forget); each request names its op (bridge/ops.py). A session
hands every such request of its running cell to `Services.handle`, which finds the op's handler. The
handlers live next to what they serve (the session's own llm and forget in session.py, memory in
session/learning.py, map in cluster/maps.py, rlm in engine/children.py) and are registered where the server
is put together (engine/assembly.py), so no handler imports the Session and no session imports a handler.

A handler types its session as `ServedSession`, what it may use of one: that keeps the handlers' modules
free of import cycles with session.py. Every request gets a reply: the worker blocks until it has one, so an
unknown op is answered as malformed and a handler's failure costs that request, never the worker.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from rlm_mcp.bridge import ops
from rlm_mcp.escaping import printable

if TYPE_CHECKING:
    from rlm_mcp.config import Settings
    from rlm_mcp.llm.router import SessionLLM
    from rlm_mcp.memory.inputs import InputRef
    from rlm_mcp.memory.service import Memory
    from rlm_mcp.session.loading import LoadedContext
    from rlm_mcp.trace import Tracer

log = logging.getLogger(__name__)

# Told a sub-call finished, with how many of the batch are done and how many there are (a cell's progress).
OnDone = Callable[[int, int], Awaitable[None]]


class ServedSession(Protocol):
    """What a handler may use of the session whose worker asked: its identity and settings, what it has
    loaded, its share of the model budget, its memory and its trace. (A handler that needs more, as the
    child RLMs do, says so by the type it takes.)"""

    id: str
    settings: Settings
    depth: int  # 1 for a client's session; past 1 for a child RLM's
    cells: int
    contexts: dict[str, LoadedContext]
    inputs: dict[str, InputRef]
    offered: list[str]
    memory: Memory | None
    llm: SessionLLM
    tracer: Tracer


@dataclass(frozen=True)
class RequestContext:
    """What a request carries besides its frame: the calling client's MCP session (for sampling sub-calls),
    who to tell of each finished sub-call, and the cell's deadline on the monotonic clock."""

    client_session: Any = None
    on_done: OnDone | None = None
    deadline: float = math.inf


class Handler(Protocol):
    """Serves one op: the reply to `request` (the worker's frame, unchecked: validate every field)."""

    def __call__(self, session: Any, request: dict[str, Any], context: RequestContext) -> Awaitable[dict[str, Any]]: ...


class Services:
    """The handlers of the worker's requests, by op."""

    def __init__(self, handlers: Mapping[str, Handler] | None = None) -> None:
        self._handlers: dict[str, Handler] = {}
        for op, handler in (handlers or {}).items():
            self.register(op, handler)

    def register(self, op: str, handler: Handler) -> None:
        """Serve `op` with `handler`. Only the worker's requests (ops.WORKER_REQUESTS) can be served, and
        each once: a second handler for one op is an assembly mistake, not a choice."""
        if op not in ops.WORKER_REQUESTS:
            raise ValueError(f"{op!r} is not a request the worker sends; see rlm_mcp/bridge/ops.py")
        if op in self._handlers:
            raise ValueError(f"{op!r} already has a handler")
        self._handlers[op] = handler

    def __contains__(self, op: object) -> bool:
        return op in self._handlers

    @property
    def ops(self) -> list[str]:
        return sorted(self._handlers)

    async def handle(self, session: ServedSession, request: dict[str, Any], context: RequestContext) -> dict[str, Any]:
        """The reply to one request of the worker's: always a reply, whatever the request or the handler."""
        op = request.get("op")
        handler = self._handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            return {"ok": False, "error": f"malformed request from the worker: op {printable(str(op), 40)!r}"}
        try:
            return await handler(session, request, context)
        except Exception as exc:
            log.exception("session %s: a %r request of the worker failed", session.id, printable(str(op), 20))
            return {"ok": False, "error": f"the server failed on this request ({type(exc).__name__}); see its log"}
