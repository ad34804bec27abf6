"""Work beyond one machine: maps over a remote corpus on a Ray cluster (extra `rlm-mcp[ray]`).

The server lists the source and asks its Ray driver, a process of its own without secrets (driver.py), to
run the tasks (pieces.py); it gets the results back as checked JSON and never imports Ray. On the nodes the
model's function runs in a child locked down as the REPL worker is (rlm_mcp/worker/mapchild.py). A map
runs only where the operator named a cluster (RLM_MCP_RAY_ADDRESS), which is trusted infrastructure.
"""
