"""What a session's worker may ask the server, put together once: the server and `rlm-mcp ask` build their
sessions with it, and a child RLM's session inherits its parent's.

Each handler lives next to what it serves; this is the one place that knows them all (session/services.py).
A new REPL capability registers its handler here.
"""

from __future__ import annotations

from typing import Any

from rlm_mcp.bridge import ops
from rlm_mcp.engine.children import serve_children
from rlm_mcp.session.learning import serve_memory
from rlm_mcp.session.services import RequestContext, ServedSession, Services
from rlm_mcp.session.session import serve_forget, serve_llm


async def serve_map(session: ServedSession, request: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    """cluster/maps.py's handler, imported on the first map: most servers have no cluster, and their start
    need not pay for it."""
    from rlm_mcp.cluster.maps import serve_map as serve

    return await serve(session, request, context)


def worker_services() -> Services:
    """Sub-calls and unload() (the session's own), the workspace memory, maps on a cluster (refused by
    the handler when the server has none), and child RLMs."""
    return Services(
        {
            ops.LLM: serve_llm,
            ops.FORGET: serve_forget,
            ops.MEMORY: serve_memory,
            ops.MAP: serve_map,
            ops.RLM: serve_children,
        }
    )
