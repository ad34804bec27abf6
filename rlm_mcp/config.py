"""One typed settings object for the whole server.

Every setting is declared once, here, with its description. The command line (`rlm-mcp --help`), the
environment (`RLM_MCP_<NAME>`) and the README's settings table are all derived from these declarations,
so a setting cannot exist in one place and be missing in another.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rlm_mcp.bridge.ops import DEFAULT_OUTPUT_CHARS
from rlm_mcp.errors import SettingsError
from rlm_mcp.units import MiB

ENV_PREFIX = "RLM_MCP_"


def default_workspace() -> Path:
    """Per-user state directory: survives restarts, unlike a temp dir, and is never inside a project.

    Always absolute: the worker starts in `/`, so a relative workspace (a host that sets HOME=relative)
    would point somewhere else for it. A relative XDG_STATE_HOME is ignored, as the XDG spec says."""
    state_home = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state_home):
        state_home = str(Path.home() / ".local" / "state")
    return Path(state_home, "rlm-mcp").resolve()


# size: one declaration of every setting, with its help text; only the validators are code
class Settings(BaseModel):
    """Server settings. Field descriptions are the help text for flags, env vars and the README."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    roots: tuple[Path, ...] = Field(
        default_factory=lambda: (Path.cwd(),),
        description="Directory that load_context may read from; repeat for several. Default: the working directory.",
        json_schema_extra={"flag": "--root", "metavar": "DIR"},
    )
    allow_url: tuple[str, ...] = Field(
        default=(),
        description="URL prefix load_context may fetch from (s3://, gs://, az://, https://, hf://; e.g. "
        "s3://team-logs/); repeat for several. Default: none, URLs are refused.",
        json_schema_extra={"flag": "--allow-url", "metavar": "PREFIX"},
    )
    fetch_max_mb: int = Field(default=4_096, ge=1, description="Most MiB one load_context of a URL fetches.")
    fetch_total_mb: int = Field(
        default=8_192,
        ge=1,
        description="Most MiB one session keeps of fetched URLs, all loads together (one copy per URL, freed "
        "when no loaded context uses it).",
    )
    ray_address: str | None = Field(
        default=None,
        description="Ray cluster (host:port) that runs rlm_map and llm_map next to remote data; the model's "
        "function runs on the nodes locked down as in the REPL. Default: none, maps are refused.",
    )
    workspace: Path = Field(
        default_factory=default_workspace,
        description="Directory for per-session state (captured output, scratch files).",
        json_schema_extra={"metavar": "DIR"},
    )
    timeout_s: float = Field(default=60.0, gt=0, description="Default time limit of one run_code call, in seconds.")
    max_timeout_s: float = Field(
        default=600.0, gt=0, description="Largest timeout_s a run_code call may ask for, in seconds."
    )
    wait_s: float = Field(
        default=50.0,
        ge=0,
        description="How long run_code waits for a cell before answering `running` (the cell goes on; run_code "
        "without code waits again). Below hosts' patience (Claude Code backgrounds calls after 120 s).",
    )
    interrupt_grace_s: float = Field(
        default=2.0,
        gt=0,
        description="After a timeout, how long interrupted code may take to stop before the worker is killed.",
    )
    progress_interval_s: float = Field(
        default=2.0, gt=0, description="Seconds between heartbeat progress notifications while a cell runs."
    )
    max_output_chars: int = Field(
        default=DEFAULT_OUTPUT_CHARS,
        ge=200,
        description="Most characters of stdout (and of stderr) a cell returns, the rest elided; a call may ask for "
        "fewer (max_output_chars).",
    )
    transport: Literal["stdio", "http"] = Field(
        default="stdio", description="stdio (one client, as hosts launch it) or http (streamable HTTP, many clients)."
    )
    host: str = Field(
        default="127.0.0.1", description="HTTP: address to listen on. Beyond loopback, --auth-token is required."
    )
    port: int = Field(default=8765, ge=0, le=65535, description="HTTP: port to listen on.")
    auth_token: str | None = Field(
        default=None,
        description="HTTP: bearer token every request must carry (without it, one is minted at start and printed "
        "to stderr). Prefer the env var.",
    )
    no_auth: bool = Field(
        default=False, description="HTTP on loopback: accept requests without a token (any local user can run code)."
    )
    max_sessions: int = Field(default=64, gt=0, description="HTTP: most sessions held at once.")
    max_new_sessions_per_minute: int = Field(
        default=30, gt=0, description="HTTP: most sessions one client address may start in a minute."
    )
    idle_timeout_s: float = Field(
        default=1_800.0, gt=0, description="HTTP: a session unused this long is closed (its snapshot kept)."
    )
    max_body_bytes: int = Field(default=4 * MiB, gt=0, description="HTTP: largest request body accepted.")
    structured_content: bool = Field(
        default=False,
        description="Tool results also carry structuredContent (for programs; Claude Code then shows the model "
        "that JSON instead of the text).",
    )
    resume: bool = Field(
        default=False,
        description="On start, resume the previous stdio session: its contexts reloaded, its variables restored.",
    )
    snapshot_max_mb: int = Field(
        default=256, ge=1, description="Most MiB of pickled variables a session keeps for recovery and resume."
    )
    sandbox: Literal["auto", "strict", "off"] = Field(
        default="auto",
        description="REPL worker lock-down. auto: every layer this machine supports, warn about the rest; "
        "strict: refuse to run code if a layer is missing; off: none (model code runs with your rights).",
    )
    memory_limit_mb: int = Field(
        default=4_096, ge=64, description="Most heap memory of one REPL worker, in MiB (RLIMIT_DATA)."
    )
    write_limit_mb: int = Field(
        default=1_024, ge=1, description="Largest file the REPL worker may write, in MiB (RLIMIT_FSIZE)."
    )
    disk_limit_mb: int = Field(
        default=4_096,
        ge=1,
        description="Most MiB a session's scratch directory may hold; checked every second while a cell runs.",
    )
    mmap_threshold_mb: int = Field(
        default=64,
        ge=1,
        description="Plain-text files from this size (MiB) up are memory-mapped (MappedText), not read into a str.",
    )
    max_file_bytes: int = Field(
        default=512 * MiB,
        gt=0,
        description="Largest file read into memory (below the mmap threshold, or parsed, or decompressed).",
    )
    dir_max_files: int = Field(default=20_000, gt=0, description="Most files loaded from one directory or glob.")
    dir_max_bytes: int = Field(
        default=256 * MiB, gt=0, description="Most bytes loaded from one directory or glob, in total."
    )
    dir_max_file_bytes: int = Field(
        default=4 * MiB, gt=0, description="Files larger than this are skipped in a directory or glob load."
    )
    inline_text_max_chars: int = Field(
        default=1_000_000, gt=0, description="Longest `text` accepted by load_context (use `path` for more)."
    )
    backend: Literal["auto", "anthropic", "openai", "claude-code", "codex", "sampling"] = Field(
        default="auto",
        description="Sub-LLM backend. auto: Anthropic if ANTHROPIC_API_KEY is set, else the OpenAI-compatible "
        "endpoint if its base URL is set, else the Claude Code CLI if logged in, else the Codex CLI if logged in, "
        "else MCP sampling if the client offers it.",
    )
    sub_model: str | None = Field(
        default=None,
        description="Model for sub-calls. Default: claude-haiku-4-5 (Anthropic), gpt-4o-mini (OpenAI-compatible), "
        "claude-haiku-4-5 (claude-code), the CLI's own (codex), the client's choice (sampling).",
    )
    openai_base_url: str | None = Field(
        default=None,
        description="Base URL of an OpenAI-compatible API (Ollama, vLLM, LM Studio, OpenRouter), "
        "e.g. http://localhost:11434/v1.",
    )
    openai_api_key: str | None = Field(
        default=None, description="API key for the OpenAI-compatible endpoint, if it needs one. Prefer the env var."
    )
    max_concurrency: int = Field(default=16, gt=0, description="Most sub-calls in flight at once, server-wide.")
    cli_concurrency: int = Field(
        default=4, gt=0, description="Most claude-code or codex sub-calls in flight at once (each is a process)."
    )
    claude_command: str = Field(default="claude", description="The Claude Code CLI, for the claude-code backend.")
    codex_command: str = Field(default="codex", description="The Codex CLI, for the codex backend.")
    max_sub_calls: int = Field(default=1_000, ge=0, description="Most sub-calls per session.")
    max_sub_tokens: int | None = Field(
        default=None, gt=0, description="Most sub-call tokens (input + output) per session. Default: no limit."
    )
    max_cost_usd: float | None = Field(
        default=None, ge=0, description="Most sub-call spend per session, in US dollars. Default: no limit."
    )
    confirm_batch_usd: float | None = Field(
        default=1.0,
        ge=0,
        description="A batch of sub-calls estimated to cost more than this, in US dollars, runs only with "
        "confirm=True. Default: 1.",
    )
    max_depth: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Levels of recursion: 1, the client's model alone (rlm_query is then a plain sub-call); "
        "2, plus one level of child RLMs; each more adds one.",
    )
    max_children: int = Field(default=4, gt=0, description="Most child RLMs of one session running at once.")
    child_max_iterations: int = Field(
        default=12, gt=0, description="Most turns of a child RLM's root model, and of `rlm-mcp ask`'s."
    )
    child_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="Longest a child RLM or `rlm-mcp ask` runs, in seconds (a child also ends with its parent's cell).",
    )
    root_model: str | None = Field(default=None, description="Root model of `rlm-mcp ask`. Default: the sub-model.")
    memory: Literal["on", "off"] = Field(
        default="on",
        description="The workspace's memory (behavior handbook, findings per input, sub-call answer cache): "
        "on, or off (none of it read or written).",
    )
    distill: Literal["on-close", "manual", "off"] = Field(
        default="on-close",
        description="When a sub-model distils a session's trace into behaviors and findings: on-close (and on "
        "demand), manual (distill() in the REPL, `rlm-mcp handbook distill`), or off.",
    )
    memory_auto_approve: bool = Field(
        default=False,
        description="Behaviors and findings that models distil or remember are offered to later sessions at once, "
        "not only once a person approves them (`rlm-mcp handbook review`); an instruction planted in a loaded "
        "file can then reach later models.",
    )
    behavior_sub_calls: bool = Field(
        default=False,
        description="Add the handbook's relevant behaviors to every sub-call's system prompt (per call: "
        "llm_query(..., behaviors=True)).",
    )
    cache_days: float = Field(
        default=7.0, ge=0, description="Sub-call answers are reused across sessions for this many days (0: never)."
    )
    cache_max_mb: int = Field(default=64, ge=1, description="Most MiB of sub-call answers kept across sessions.")
    prices: dict[str, tuple[float, float]] | None = Field(
        default=None,
        description='Extra or overriding model prices as JSON, USD per million tokens: {"model": [input, output]}.',
    )
    sub_max_tokens: int = Field(default=2_048, gt=0, description="Default max_tokens of one sub-call's answer.")
    sub_timeout_s: float = Field(default=120.0, gt=0, description="Time limit of one sub-call attempt, in seconds.")
    sub_retries: int = Field(
        default=4, ge=0, description="Retries of a sub-call on 429, 529/overloaded, 5xx and timeouts."
    )
    retry_base_s: float = Field(
        default=0.5, ge=0, description="First retry delay in seconds; doubles each retry, with jitter."
    )
    sub_window_tokens: int = Field(
        default=128_000, gt=0, description="Context window assumed for sub-models missing from the built-in table."
    )
    otel_texts: bool = Field(
        default=False,
        description="With OpenTelemetry export (OTEL_EXPORTER_OTLP_ENDPOINT set; extra rlm-mcp[otel]): put prompts, "
        "answers and code in the spans too.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Level of the log written to stderr."
    )

    @field_validator("prices", mode="before")
    @classmethod
    def _parse_prices(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not valid JSON ({exc})") from None
        return value

    @field_validator("allow_url", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):  # a URL holds ":", so not os.pathsep: whitespace or commas
            return tuple(part for part in re.split(r"[\s,]+", value) if part)
        return value

    @field_validator("allow_url")
    @classmethod
    def _check_urls(cls, prefixes: tuple[str, ...]) -> tuple[str, ...]:
        from rlm_mcp.contexts.remote import SCHEMES, scheme_of

        for prefix in prefixes:
            if scheme_of(prefix) is None:
                raise ValueError(f"{prefix!r} is not a URL prefix of a known scheme ({', '.join(SCHEMES)})")
        return prefixes

    @field_validator("roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part for part in value.split(os.pathsep) if part)
        return value

    @field_validator("roots")
    @classmethod
    def _resolve_roots(cls, roots: tuple[Path, ...]) -> tuple[Path, ...]:
        if not roots:
            raise ValueError("at least one root directory is required")
        resolved = []
        for root in roots:
            path = root.expanduser().resolve()
            if not path.is_dir():
                raise ValueError(f"root {str(root)!r} is not a directory")
            resolved.append(path)
        return tuple(resolved)

    @field_validator("workspace")
    @classmethod
    def _absolute_workspace(cls, workspace: Path) -> Path:
        return workspace.expanduser().resolve()


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    extra = Settings.model_fields[field].json_schema_extra
    if isinstance(extra, dict) and isinstance(extra.get("flag"), str):
        return str(extra["flag"])
    return "--" + field.replace("_", "-")


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings with precedence: explicit overrides (flags) > RLM_MCP_* environment > defaults."""
    environ = os.environ if environ is None else environ
    flags = {field: value for field, value in (overrides or {}).items() if value is not None}
    values: dict[str, Any] = {}
    for field in Settings.model_fields:
        raw = environ.get(env_name(field))
        if raw is not None and raw != "":
            values[field] = raw
    values.update(flags)
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            source = flag_name(field) if field in flags else env_name(field)
            problems.append(f"{source}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None
