"""`rlm-mcp doctor`: start one REPL worker exactly as a session would and print what its sandbox holds.

The report comes from the worker itself, after it has locked itself down, so it shows what this machine
really provides under these settings, not what a separate probe guesses.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import anyio

from rlm_mcp.config import Settings
from rlm_mcp.repl.host import WorkerStartError
from rlm_mcp.repl.sandbox import make_undumpable, summary
from rlm_mcp.sessions import session_worker_host


async def _report(settings: Settings) -> tuple[list[dict[str, object]], str | None]:
    settings.workspace.mkdir(parents=True, exist_ok=True)
    session_dir = Path(tempfile.mkdtemp(prefix="doctor-", dir=settings.workspace))
    host = session_worker_host(settings, session_dir)
    try:
        await host.start()
        return host.sandbox, None
    except WorkerStartError as exc:
        return host.sandbox, str(exc)
    finally:
        await host.close()
        shutil.rmtree(session_dir, ignore_errors=True)


def run_doctor(settings: Settings) -> int:
    """Print the report; exit status 1 if the worker would not start under these settings."""
    make_undumpable()  # as the server does, so the environment layer is reported as a session would see it
    layers, error = anyio.run(_report, settings)
    print(f"rlm-mcp sandbox report (RLM_MCP_SANDBOX={settings.sandbox}, Python {sys.version.split()[0]})")
    width = max((len(str(layer["name"])) for layer in layers), default=0)
    for layer in layers:
        mark = "yes" if layer["active"] else "NO "
        print(f"  {mark}  {str(layer['name']).ljust(width)}  {layer['detail']}")
    print(summary(layers))
    if error:
        print(f"error: {error}")
        return 1
    return 0
