"""Work beyond one machine: maps over a remote corpus on a Ray cluster (extra `rlm-mcp[ray]`).

The server submits the tasks and collects their results; the REPL worker only asks for a map and gets
the results. What runs on the cluster is model-written code, with the cluster's rights: rlm-mcp's sandbox
does not extend there (the cluster's own containers are the sandbox), which is why a map runs only where
the operator named a cluster (RLM_MCP_RAY_ADDRESS).
"""
