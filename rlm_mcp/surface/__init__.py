"""The MCP surface: what a client sees of the server, and nothing the engine or the session needs.

`server` registers the tools (as `rlm_mcp.tools` declares them), the prompt and the resources and turns each
answer into a result; `tasks` is the MCP Tasks extension (a long run_code answered with a task handle);
`http` serves the same server over streamable HTTP behind a bearer token. It sits on top: it imports the
session and the engine, and nothing below imports it (tests/test_boundary.py).
"""
