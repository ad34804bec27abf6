"""Sub-calls through the Codex CLI, with the login its user already has (ChatGPT or an API key).

Each call is `codex exec` from a fresh context: ephemeral (no saved session), a read-only sandbox, in an
empty throwaway working directory of ours, with the shell, web search, plugins, apps, hooks, agents and
skills off and telemetry off, the prompt on stdin. Codex has no flag for a system prompt, so ours is put
before the prompt. The answer is the last agent message of its JSON event stream and the usage is its
turn's; Codex reports no cost, so the router prices the tokens when it knows the model.

No MCP server of the user's starts for a sub-call: their tools would be the injected sub-model's tools
(with `default_tools_approval_mode = "approve"` one read a file outside the roots). Codex has no switch for
that: `-c mcp_servers={}` merges into the user's table and turns nothing off, `--ignore-user-config` drops
the user's model provider too, and a private CODEX_HOME would fork the login (a refreshed token written
to the copy, the user's own left stale). So Codex is asked which servers its configuration defines, every
layer it reads included (`codex mcp list --json`, in our working directory, with our overrides), each is
turned off with one `-c mcp_servers={"<name>"={enabled=false}, ...}` (an inline table: a dotted `-c` path
cannot name a server whose name holds a dot), and a second listing with that override must show every
one off. A configuration Codex cannot read, or a server that stays on, refuses the sub-call. The answer is
kept until a Codex configuration file changes, at most MCP_RECHECK_S.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.cli_process import CliPool, child_environment, cli_model, short
from rlm_mcp.llm.types import Completion, SubCall

DEFAULT_MODEL = "codex-default"  # no -m: the model the user's Codex is configured for
QUIET = (  # -c overrides: nothing but the model's answer, and no traffic besides the model call
    'web_search="disabled"',
    'history.persistence="none"',
    'otel.exporter="none"',
    'otel.trace_exporter="none"',
    'otel.metrics_exporter="none"',
    "analytics.enabled=false",
    "feedback.enabled=false",
    "check_for_update_on_startup=false",
    "features.plugins=false",
    "features.apps=false",
    "features.shell_tool=false",
    "features.unified_exec=false",
    "features.view_image=false",
    "features.hooks=false",
    "agents.enabled=false",
    "skills.bundled.enabled=false",
)
MCP_LIST_TIMEOUT_S = 20.0
MCP_RECHECK_S = 60.0  # a layer whose file we do not watch is seen again within this
MCP_LIST_MAX_BYTES = 4 * 1024 * 1024
SYSTEM_CONFIG_DIR = Path("/etc/codex")  # system and managed configuration, which Codex reads too


class CodexBackend:
    name = "codex"
    default_model: str | None = DEFAULT_MODEL

    def __init__(self, command: str, concurrency: int, subscription: bool, environ: Mapping[str, str] | None = None):
        self.command = command
        self.subscription = subscription
        self.limiter = anyio.CapacityLimiter(concurrency)  # each call is a process: a cap of its own
        self._environ = dict(os.environ if environ is None else environ)
        self._workdir = tempfile.TemporaryDirectory(prefix="rlm-mcp-codex-")
        self._pool = CliPool(self._workdir.name, spares=concurrency)
        self._mcp_lock = anyio.Lock()
        self._mcp_off: tuple[str, ...] | None = None  # the override that turns the user's MCP servers off
        self._mcp_seen: tuple[tuple[Any, ...], ...] = ()  # the configuration files it was found for
        self._mcp_checked = 0.0

    def _argv(self, call: SubCall, mcp_off: Sequence[str] = ()) -> list[str]:
        argv = [self.command, "exec", "--json", "--ephemeral", "--skip-git-repo-check", "--sandbox", "read-only"]
        argv += ["--cd", self._workdir.name]
        for override in (*QUIET, *mcp_off):
            argv += ["--config", override]
        if call.model != DEFAULT_MODEL:
            argv.append(cli_model(call.model))
        return [*argv, "-"]

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        prompt = f"{call.system}\n\n{call.prompt}" if call.system else call.prompt
        env = child_environment(self._environ)
        mcp_off = await self._mcp_servers_off(env)
        run = await self._pool.run(self._argv(call, mcp_off), env, prompt, timeout_s)
        return parse_events(run.stdout, run.stderr, run.returncode, call.model, self.subscription)

    async def _mcp_servers_off(self, env: Mapping[str, str]) -> tuple[str, ...]:
        """The `-c` override that keeps every MCP server of the user's Codex configuration from starting,
        checked with Codex itself (see the module docstring); a SubCallError when that cannot be ensured."""
        async with self._mcp_lock:
            seen = config_files(self._environ)
            fresh = time.monotonic() - self._mcp_checked < MCP_RECHECK_S
            if self._mcp_off is not None and seen == self._mcp_seen and fresh:
                return self._mcp_off
            names = [name for name, _ in await self._mcp_list(env, ())]
            off = (mcp_override(names),) if names else ()
            still_on = [name for name, enabled in await self._mcp_list(env, off) if enabled] if names else []
            if still_on:
                raise SubCallError(
                    f"the Codex CLI would start the MCP server(s) {', '.join(map(repr, still_on))} for a sub-call "
                    "even when told not to (a managed configuration?), and a sub-model must not have their tools; "
                    "use another backend (RLM_MCP_BACKEND)",
                    kind="no_backend",
                )
            self._mcp_off, self._mcp_seen, self._mcp_checked = off, seen, time.monotonic()
            return off

    async def _mcp_list(self, env: Mapping[str, str], extra: Sequence[str]) -> list[tuple[str, bool]]:
        """(name, enabled) of every MCP server `codex mcp list --json` finds with our overrides."""
        argv = [self.command, "mcp", "list", "--json"]
        for override in (*QUIET, *extra):
            argv += ["--config", override]
        why = ""
        try:
            with anyio.fail_after(MCP_LIST_TIMEOUT_S):
                done = await anyio.run_process(
                    argv, stdin=subprocess.DEVNULL, check=False, cwd=self._workdir.name, env=dict(env),
                    start_new_session=True,
                )  # fmt: skip
        except (OSError, TimeoutError) as exc:
            why = str(exc) or "no answer"
        else:
            listed = parse_mcp_list(done.stdout) if done.returncode == 0 else None
            if listed is not None:
                return listed
            why = short(done.stderr.decode("utf-8", "replace")) if done.returncode else "unreadable output"
        raise SubCallError(
            "cannot tell which MCP servers the Codex CLI's configuration would start, so no sub-call goes "
            f"through it (`codex mcp list` failed: {why}); fix the Codex configuration (~/.codex/config.toml)",
            kind="no_backend",
        )

    def reap(self) -> None:
        self._pool.reap()

    async def aclose(self) -> None:
        await self._pool.aclose()
        self._workdir.cleanup()


def config_files(environ: Mapping[str, str]) -> tuple[tuple[Any, ...], ...]:
    """What identifies the Codex configuration now: the TOML files of CODEX_HOME and of /etc/codex (user,
    profiles, system, managed), with their sizes and change times, and the directories' own."""
    home = environ.get("CODEX_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".codex")
    found: list[tuple[Any, ...]] = []
    for directory in (Path(home), SYSTEM_CONFIG_DIR):
        try:
            entries = [directory, *sorted(directory.glob("*.toml"))]
        except OSError:
            entries = [directory]
        for path in entries:
            try:
                info = path.stat()
            except OSError:
                found.append((str(path), None))
                continue
            found.append((str(path), info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    return tuple(found)


def toml_string(text: str) -> str:
    """`text` as a TOML basic string: any name can be a key this way, dots and quotes included."""
    escaped = "".join(
        f"\\u{ord(char):04x}" if ord(char) < 0x20 or ord(char) == 0x7F else "\\" + char if char in '"\\' else char
        for char in text
    )
    return f'"{escaped}"'


def mcp_override(names: Sequence[str]) -> str:
    """One `-c` value that turns every named MCP server off (Codex merges it into the user's table)."""
    return "mcp_servers={" + ", ".join(f"{toml_string(name)}={{enabled=false}}" for name in names) + "}"


def parse_mcp_list(stdout: bytes) -> list[tuple[str, bool]] | None:
    """(name, enabled) from `codex mcp list --json`, or None if it is not the list it should be."""
    if len(stdout) > MCP_LIST_MAX_BYTES:
        return None
    try:
        servers = json.loads(stdout.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(servers, list):
        return None
    listed: list[tuple[str, bool]] = []
    for server in servers:
        name = server.get("name") if isinstance(server, dict) else None
        if not isinstance(name, str) or not name:
            return None
        try:
            name.encode("utf-8")  # a lone surrogate would not go on a command line
        except UnicodeEncodeError:
            return None
        listed.append((name, server.get("enabled") is not False))
    return listed


def parse_events(stdout: str, stderr: str, returncode: int, model: str, subscription: bool) -> Completion:
    """The last agent message and the turn's usage in `codex exec --json`'s event lines, or its error."""
    answer: str | None = None
    usage: dict[str, Any] = {}
    failure: str | None = None
    for line in stdout.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        item = event.get("item") if isinstance(event.get("item"), dict) else {}
        if event.get("type") == "item.completed" and item.get("type") == "agent_message":
            answer = str(item.get("text") or "")
        elif event.get("type") == "turn.completed" and isinstance(event.get("usage"), dict):
            usage = event["usage"]
        elif event.get("type") == "turn.failed":
            error = event.get("error") if isinstance(event.get("error"), dict) else {}
            failure = str(error.get("message") or "the turn failed")
        elif event.get("type") == "error" and failure is None:
            failure = str(event.get("message") or "error")
    if failure is not None or answer is None:
        why = failure or f"exited with {returncode} without an answer: {short(stderr)}"
        lowered = why.lower()
        if "not logged in" in lowered or "401" in lowered or "unauthorized" in lowered:
            raise SubCallError(f"the Codex CLI is not logged in ({why}); run `codex login`", kind="no_backend")
        transient = any(mark in lowered for mark in ("429", "rate limit", "500", "502", "503", "overloaded"))
        kind = "rate_limited" if "429" in lowered or "rate limit" in lowered else "provider"
        raise SubCallError(f"the Codex CLI failed: {why}", kind=kind, retryable=transient)
    return Completion(
        text=answer,
        model=model,
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0) + int(usage.get("reasoning_output_tokens") or 0),
        subscription=subscription,
    )
