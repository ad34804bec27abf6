"""Sub-calls through the Claude Code CLI, with the login its user already has (no API key needed).

Each call is `claude -p` from a fresh context: no tools, no MCP servers, no slash commands or skills, no
settings, hooks or CLAUDE.md (it runs in an empty directory of ours, with no setting sources), no saved
session, and our own short system prompt in place of Claude Code's ~16k-token preamble. The prompt goes on
stdin (a long one on the command line would fail), and the answer, usage and cost come from its JSON result.
The CLI authenticates as its user does: CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`), the login in
~/.claude, or its own key settings; with a subscription login the cost it reports is what the same tokens
would cost on the API, not a charge, and results say so.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp import safefs
from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.cli_process import CliPool, child_environment, cli_model, short
from rlm_mcp.llm.http import status_error
from rlm_mcp.llm.types import Completion, SubCall

DEFAULT_SYSTEM = "You are a precise assistant. Answer the user's request directly and concisely, from the text given."


class ClaudeCodeBackend:
    name = "claude-code"
    # An explicit id: with the alias `haiku` the CLI first sends an extra, non-streamed request.
    default_model: str | None = "claude-haiku-4-5"

    def __init__(self, command: str, concurrency: int, subscription: bool, environ: Mapping[str, str] | None = None):
        """`subscription`: the CLI uses a login rather than an API key, so its costs are not charges."""
        self.command = command
        self.subscription = subscription
        self.limiter = anyio.CapacityLimiter(concurrency)  # each call is a process: a cap of its own
        self._environ = dict(os.environ if environ is None else environ)
        self._workdir = tempfile.TemporaryDirectory(prefix="rlm-mcp-claude-")  # empty: no CLAUDE.md to find
        self._pool = CliPool(self._workdir.name, spares=concurrency)

    def _argv(self, call: SubCall) -> list[str]:
        return [
            self.command,
            "--print",
            "--output-format",
            "json",
            "--tools",
            "",
            "--strict-mcp-config",
            "--setting-sources",
            "",
            "--disable-slash-commands",
            "--no-session-persistence",
            cli_model(call.model),
            f"--system-prompt-file={self._system_file(call.system or DEFAULT_SYSTEM)}",
        ]

    def _system_file(self, text: str) -> str:
        """The system prompt in a file of our private directory, named by its digest: REPL code chooses it,
        so it stays off the command line (which every local process can read, and which is bounded)."""
        path = Path(self._workdir.name) / f"system-{hashlib.sha256(text.encode()).hexdigest()[:32]}.txt"
        if not path.exists():
            safefs.write_atomic(path, text.encode("utf-8"))
        return str(path)

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        env = child_environment(self._environ)
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(call.max_tokens)
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"  # no telemetry or start-up lookups: 1 s less a call
        run = await self._pool.run(self._argv(call), env, call.prompt, timeout_s)
        return parse_result(run.stdout, run.stderr, run.returncode, self.subscription)

    def reap(self) -> None:
        self._pool.reap()

    async def aclose(self) -> None:
        await self._pool.aclose()
        self._workdir.cleanup()


def parse_result(stdout: str, stderr: str, returncode: int, subscription: bool) -> Completion:
    """The answer in `claude -p --output-format json`'s result object, or the error it reports."""
    try:
        result: Any = json.loads(stdout.strip().splitlines()[-1]) if stdout.strip() else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        raise SubCallError(
            f"the Claude Code CLI exited with {returncode} without a JSON result: {short(stderr or stdout)}",
            kind="provider",
            retryable=returncode < 0,
        )
    if result.get("is_error") or result.get("subtype") != "success":
        status = result.get("api_error_status")
        message = str(result.get("result") or result.get("subtype") or "error")
        if isinstance(status, int):
            raise status_error(status, f"via the Claude Code CLI: {message}")
        if "login" in message.lower() or "authenticat" in message.lower():
            raise SubCallError(
                f"the Claude Code CLI is not logged in ({message}); run `claude` and log in, or `claude setup-token` "
                "and set CLAUDE_CODE_OAUTH_TOKEN in the server's environment",
                kind="no_backend",
            )
        raise SubCallError(f"the Claude Code CLI failed: {message}", kind="provider")
    usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    models = result.get("modelUsage") if isinstance(result.get("modelUsage"), dict) else {}
    input_tokens = sum(int(usage.get(key) or 0) for key in ("input_tokens", "cache_creation_input_tokens"))
    input_tokens += int(usage.get("cache_read_input_tokens") or 0)
    cost = result.get("total_cost_usd")
    return Completion(
        text=str(result.get("result") or ""),
        model=next(iter(models), "claude-code"),
        input_tokens=input_tokens,
        output_tokens=int(usage.get("output_tokens") or 0),
        cost_usd=float(cost) if isinstance(cost, (int, float)) else None,
        subscription=subscription,
    )
