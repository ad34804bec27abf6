"""Each tool declared once, its structured result, and the text a model reads of it (rlm_mcp/tools)."""
