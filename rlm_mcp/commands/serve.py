"""`rlm-mcp` (or `rlm-mcp serve`): the MCP server, over stdio the way MCP clients launch it, or over
streamable HTTP with --transport http (rlm_mcp/surface/http.py)."""

from __future__ import annotations

import logging

from rlm_mcp import __version__
from rlm_mcp.config import Settings
from rlm_mcp.surface.http import serve
from rlm_mcp.surface.server import build_server


def run(settings: Settings) -> int:
    if settings.transport == "http":
        serve(settings)
        return 0
    logging.getLogger("rlm_mcp").info("rlm-mcp %s serving over stdio; roots: %s", __version__, settings.roots)
    build_server(settings).run("stdio")
    return 0
