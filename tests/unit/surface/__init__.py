"""The MCP surface pieces that need no running server: the HTTP guard, tasks, the built server (rlm_mcp/surface)."""
