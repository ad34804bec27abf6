"""A REPL worker host as a session builds it, for benchmarks that measure the worker without MCP."""

from __future__ import annotations

from pathlib import Path

from rlm_mcp.config import load_settings
from rlm_mcp.repl.host import WorkerHost
from rlm_mcp.repl.sandbox import worker_environment
from rlm_mcp.sessions import sandbox_policy


def worker_host(tmp: Path, sandbox: str = "auto") -> WorkerHost:
    """A host whose worker is locked down exactly as a session's would be, in `tmp`, with `sandbox` mode."""
    tmp.mkdir(parents=True, exist_ok=True)
    settings = load_settings({"roots": [tmp], "workspace": tmp / "ws", "sandbox": sandbox}, environ={})
    session_dir = tmp / "ws" / "sessions" / f"bench-{sandbox}"
    return WorkerHost(
        capture_dir=session_dir / "worker",
        work_dir=session_dir / "work",
        env=worker_environment(session_dir / "home"),
        policy=sandbox_policy(settings, session_dir),
    )
