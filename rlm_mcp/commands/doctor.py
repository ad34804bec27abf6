"""`rlm-mcp doctor`: start one REPL worker exactly as a session would and print what its sandbox holds.

The report comes from the worker itself, after it has locked itself down, so it shows what this machine
really provides under these settings, not what a separate probe guesses. One line more says what caps the
worker's memory: RLIMIT_DATA misses shared anonymous memory, so either a cgroup of the worker's own
(found on the running worker) or the seccomp filter that refuses such memory must hold as well.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import anyio

from rlm_mcp.config import Settings
from rlm_mcp.errors import WorkerStartError
from rlm_mcp.host.factory import session_worker_host
from rlm_mcp.host.proctree import descendants
from rlm_mcp.llm.logins import cli_login
from rlm_mcp.sandbox import exposure
from rlm_mcp.sandbox.cgroups import cgroup_support, worker_cgroups
from rlm_mcp.sandbox.policy import summary
from rlm_mcp.sandbox.prctl import make_undumpable


async def _report(settings: Settings) -> tuple[list[dict[str, object]], str | None, list[str]]:
    """The worker's report of its layers, the start error if any, and the worker cgroups it runs in."""
    settings.workspace.mkdir(parents=True, exist_ok=True)
    session_dir = Path(tempfile.mkdtemp(prefix="doctor-", dir=settings.workspace))
    host = session_worker_host(settings, session_dir)
    try:
        await host.start()
        return host.sandbox, None, worker_cgroups(descendants(os.getpid()))
    except WorkerStartError as exc:
        return host.sandbox, str(exc), []
    finally:
        await host.close()
        shutil.rmtree(session_dir, ignore_errors=True)


def memory_line(settings: Settings, layers: list[dict[str, object]], cgroups: list[str]) -> str:
    """Which mechanism caps the worker's memory here, shared anonymous memory included."""
    active = {str(layer["name"]): bool(layer["active"]) for layer in layers}
    details = {str(layer["name"]): str(layer["detail"]) for layer in layers}
    if not active.get("limits"):
        return f"memory: not capped ({details.get('limits', 'no report')})"
    text = f"memory: RLIMIT_DATA {settings.memory_limit_mb:,} MiB"
    if cgroups:
        return f"{text}; cgroup {', '.join(cgroups)}, whose memory.max counts shared memory too"
    support = cgroup_support()
    why = (
        f"cgroup v2 is delegated here ({support.reason}), but the worker was given no cgroup of its own"
        if support.delegated
        else f"cgroup v2 not delegated here: {support.reason}"
    )
    if active.get("processes"):  # the seccomp filter that refuses processes refuses shared memory too
        return f"{text}; shared anonymous memory refused by seccomp ({why})"
    return f"{text} only; shared anonymous memory is NOT capped (no seccomp filter; {why})"


def backend_lines(settings: Settings, environ: dict[str, str] | None = None) -> list[str]:
    """Which sub-call backends would work on this machine, in the order `auto` tries them, and why not."""
    environ = dict(os.environ if environ is None else environ)
    lines = [f"sub-call backends (RLM_MCP_BACKEND={settings.backend}; auto takes the first that works):"]
    key = "ANTHROPIC_API_KEY is set" if environ.get("ANTHROPIC_API_KEY") else "ANTHROPIC_API_KEY is not set"
    lines.append(f"  {'yes' if environ.get('ANTHROPIC_API_KEY') else 'NO '}  anthropic    {key}")
    url = settings.openai_base_url
    lines.append(f"  {'yes' if url else 'NO '}  openai       {url or 'RLM_MCP_OPENAI_BASE_URL is not set'}")
    for name, command in (("claude-code", settings.claude_command), ("codex", settings.codex_command)):
        login = cli_login(name, command, environ)
        how = f"{login.path}: {login.detail}" if login.path else login.detail
        if login.logged_in and login.subscription:
            how += "; a subscription: costs shown are API prices, not charges"
        lines.append(f"  {'yes' if login.logged_in else 'NO '}  {name.ljust(11)}  {how}")
    lines.append("  ?    sampling     if the MCP client offers it (Claude Code and Codex do not)")
    return lines


def spares_line() -> str:
    """Whether CLI sub-calls get processes started ahead of need, after a worker has reported its sandbox."""
    if exposure.other_processes_closed():
        return "CLI processes started ahead of need (spares): yes, REPL workers cannot read other processes"
    return (
        "CLI processes started ahead of need (spares): NO, REPL code could read a waiting process's login "
        "(see the environment layer above); each claude-code or codex sub-call starts its own, about 0.2 s more a call"
    )


def run_doctor(settings: Settings) -> int:
    """Print the report; exit status 1 if the worker would not start under these settings."""
    make_undumpable()  # as the server does, so the environment layer is reported as a session would see it
    layers, error, cgroups = anyio.run(_report, settings)
    print(f"rlm-mcp sandbox report (RLM_MCP_SANDBOX={settings.sandbox}, Python {sys.version.split()[0]})")
    width = max((len(str(layer["name"])) for layer in layers), default=0)
    for layer in layers:
        mark = "yes" if layer["active"] else "NO "
        print(f"  {mark}  {str(layer['name']).ljust(width)}  {layer['detail']}")
    print(summary(layers))
    print(memory_line(settings, layers, cgroups))
    print("\n".join(backend_lines(settings)))
    print(spares_line())
    if error:
        print(f"error: {error}")
        return 1
    return 0
