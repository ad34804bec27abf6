"""The frame format and the message names the server and its REPL worker share (rlm_mcp/bridge)."""
