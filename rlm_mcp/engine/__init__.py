"""The server as an RLM of its own: a root loop that drives a model with the tools an MCP client has.

Used by rlm_query (a child RLM, with a sub-model as its root) and by `rlm-mcp ask` (a configured root
model, no MCP client at all): one engine, so what the evaluation measures is what the REPL runs.
"""
