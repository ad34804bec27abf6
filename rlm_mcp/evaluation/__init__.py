"""`rlm-mcp eval`: the long-context tasks of the RLM literature through `ask`, against the plain model."""
