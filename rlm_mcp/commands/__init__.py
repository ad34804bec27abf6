"""One module per `rlm-mcp` subcommand: its flags and the small function that runs it.

rlm_mcp/cli.py parses the shared flags (every setting) and dispatches here, importing a command's module
only when that command runs, so `rlm-mcp --help` imports neither the server nor the engine. What a command
does lives in its package (the surface, the engine, the viewer, the memory, replay, evaluation); a module
here is command-line glue only.
"""
