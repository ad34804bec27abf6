"""The pinned npm CLIs the tests and benchmarks drive (.ci/run installs them), and where to find them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CLAUDE_VERSION = "2.1.332"  # the npm package .ci/run installs
MCPB_VERSION = "2.1.2"  # @anthropic-ai/mcpb, which validates and packs the MCP bundle
CODEX_VERSION = "0.171.0"  # @openai/codex, a sub-call backend


def find_npm_cli(command: str, override: str) -> str | None:
    """A pinned npm CLI: the path in the `override` variable, the copy .ci/run installs, or `command` on PATH."""
    candidates = [
        os.environ.get(override),
        str(Path.home() / ".cache" / "rlm-mcp-test-npm" / "node_modules" / ".bin" / command),
        shutil.which(command),
    ]
    return next((path for path in candidates if path and os.access(path, os.X_OK)), None)


def find_claude() -> str | None:
    return find_npm_cli("claude", "RLM_MCP_TEST_CLAUDE")
