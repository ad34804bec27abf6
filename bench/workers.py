"""A REPL worker host as a session builds it, for benchmarks that measure the worker without MCP."""

from __future__ import annotations

from pathlib import Path

from rlm_mcp.config import load_settings
from rlm_mcp.host.factory import session_worker_host
from rlm_mcp.host.worker_host import WorkerHost


def worker_host(tmp: Path, sandbox: str = "auto") -> WorkerHost:
    """A host whose worker is locked down exactly as a session's would be, in `tmp`, with `sandbox` mode."""
    tmp.mkdir(parents=True, exist_ok=True)
    settings = load_settings({"roots": [tmp], "workspace": tmp / "ws", "sandbox": sandbox}, environ={})
    session_dir = tmp / "ws" / "sessions" / f"bench-{sandbox}"
    return session_worker_host(settings, session_dir)
