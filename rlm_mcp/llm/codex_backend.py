"""Sub-calls through the Codex CLI, with the login its user already has (ChatGPT or an API key).

Each call is `codex exec` from a fresh context: ephemeral (no saved session), a read-only sandbox, in an
empty throwaway working directory of ours, with the shell, web search, plugins, apps, hooks, agents and
skills off and telemetry off, the prompt on stdin. Codex has no flag for a system prompt, so ours is put
before the prompt. The answer is the last agent message of its JSON event stream and the usage is its
turn's; Codex reports no cost, so the router prices the tokens when it knows the model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import anyio

from rlm_mcp.llm.cli_process import CliPool, child_environment, cli_model, short
from rlm_mcp.llm.types import Completion, SubCall, SubCallError

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

    def _argv(self, call: SubCall) -> list[str]:
        argv = [self.command, "exec", "--json", "--ephemeral", "--skip-git-repo-check", "--sandbox", "read-only"]
        argv += ["--cd", self._workdir.name]
        for override in QUIET:
            argv += ["--config", override]
        if call.model != DEFAULT_MODEL:
            argv.append(cli_model(call.model))
        return [*argv, "-"]

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        prompt = f"{call.system}\n\n{call.prompt}" if call.system else call.prompt
        run = await self._pool.run(self._argv(call), child_environment(self._environ), prompt, timeout_s)
        return parse_events(run.stdout, run.stderr, run.returncode, call.model, self.subscription)

    def reap(self) -> None:
        self._pool.reap()

    async def aclose(self) -> None:
        await self._pool.aclose()
        self._workdir.cleanup()


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
