"""The MCP bundle's entry point: the host installs rlm-mcp from pyproject.toml with uv and runs this file."""

import sys

from rlm_mcp.cli import main

if __name__ == "__main__":
    sys.exit(main())
