"""Each `rlm-mcp` subcommand's flags: help without the server, bad input refused (rlm_mcp/commands)."""
