"""Whether a coding-agent CLI is installed and logged in, asked once and remembered.

`auto` needs to know before a sub-call whether the claude-code or codex backend would work. Asking runs the
CLI (`claude auth status --json`, `codex login status`: a quarter of a second each here), so the answer is
kept for the server's life and the question is asked in a thread, off the event loop: at start-up while the
host's model takes its first turn, or on the first sub-call that needs it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from rlm_mcp.llm.cli_process import child_environment

STATUS_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class CliLogin:
    """`path`: the executable, if found; `subscription`: a login rather than an API key (costs are then
    what the tokens would cost on the API, not charges); `detail`: how it is logged in, or why it cannot be used."""

    name: str
    path: str | None
    logged_in: bool
    subscription: bool
    detail: str


_cache: dict[tuple[str, str], CliLogin] = {}
_lock = threading.Lock()


def cli_login(name: str, command: str, environ: Mapping[str, str]) -> CliLogin:
    """The login of the `claude` or `codex` CLI at `command` (blocking; cached per command)."""
    with _lock:
        known = _cache.get((name, command))
    if known is not None:
        return known
    found = (claude_login if name == "claude-code" else codex_login)(command, environ)
    with _lock:
        _cache[(name, command)] = found
    return found


def known(name: str, command: str) -> CliLogin | None:
    """The answer already asked for, without asking: every batch in `auto` mode checks, most only this."""
    with _lock:
        return _cache.get((name, command))


def forget() -> None:
    """Ask again next time (tests change what is installed and logged in)."""
    with _lock:
        _cache.clear()


def _status(argv: list[str], environ: Mapping[str, str]) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=STATUS_TIMEOUT_S,
            env={**child_environment(environ), "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"},
            start_new_session=True,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None


def claude_login(command: str, environ: Mapping[str, str]) -> CliLogin:
    path = shutil.which(command, path=environ.get("PATH"))
    if path is None:
        missing = f"`{command}` is not installed (npm i -g @anthropic-ai/claude-code)"
        return CliLogin("claude-code", None, False, False, missing)
    done = _status([path, "auth", "status", "--json"], environ)
    try:
        status = json.loads(done.stdout) if done is not None else {}
    except ValueError:
        status = {}
    if not isinstance(status, dict) or not status.get("loggedIn"):
        return CliLogin(
            "claude-code",
            path,
            False,
            False,
            "Claude Code is not logged in: run `claude` and log in, or `claude setup-token` and set "
            "CLAUDE_CODE_OAUTH_TOKEN (a login in the macOS keychain may be out of a child process's reach)",
        )
    method = str(status.get("authMethod") or "login")
    return CliLogin("claude-code", path, True, method != "api_key", f"logged in ({method})")


def codex_login(command: str, environ: Mapping[str, str]) -> CliLogin:
    path = shutil.which(command, path=environ.get("PATH"))
    if path is None:
        return CliLogin("codex", None, False, False, f"`{command}` is not installed (npm i -g @openai/codex)")
    done = _status([path, "login", "status"], environ)
    said = ((done.stdout + done.stderr) if done is not None else "").strip()
    if done is None or done.returncode != 0 or "not logged in" in said.lower():
        return CliLogin("codex", path, False, False, "Codex is not logged in: run `codex login`")
    api_key = "api key" in said.lower()
    return CliLogin("codex", path, True, not api_key, said.splitlines()[-1] if said else "logged in")
