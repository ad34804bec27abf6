"""rlm-mcp: a Recursive Language Model server for the Model Context Protocol.

Kept import-light on purpose: the REPL worker imports this package too, and its start-up time counts.
"""

__version__ = "0.1.0"
