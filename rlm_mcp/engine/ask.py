"""`rlm-mcp ask PATH... QUESTION`: the whole RLM without an MCP client, the same engine as rlm_query.

A session like any other (sandboxed worker, budgets, children through rlm_query up to --max-depth), the
paths loaded as `context` (and `context_2`, ... for more), and a configured root model driven by the root
loop. The paths are the user's own, given on the command line, so their directories become roots.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp.config import Settings
from rlm_mcp.engine.assembly import worker_services
from rlm_mcp.engine.loop import RootLoop, RootOutcome
from rlm_mcp.errors import AskError, SubCallError, UserError
from rlm_mcp.llm.router import Router, usage_since
from rlm_mcp.llm.types import can_chat
from rlm_mcp.memory.service import Memory
from rlm_mcp.session.session import Session
from rlm_mcp.session.store import SessionStore
from rlm_mcp.tools.schemas import SubCallUsage


@dataclass
class AskResult:
    answer: str
    stopped: str
    partial: bool
    iterations: int
    model: str
    elapsed_s: float
    root: SubCallUsage
    total: SubCallUsage  # the root's turns, every sub-call and every child's, together
    error: str | None = None
    children: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: int = 0
    read_chars: int = 0  # what the root model was given to read (system prompt, question, tool results)
    learning: SubCallUsage = field(default_factory=SubCallUsage)  # the distillation at the end, if any

    @property
    def sub(self) -> SubCallUsage:
        return SubCallUsage(**{k: getattr(self.total, k) - getattr(self.root, k) for k in SubCallUsage.model_fields})

    def as_json(self) -> dict[str, Any]:
        return {
            "answer": self.answer,
            "stopped": self.stopped,
            "partial": self.partial,
            "iterations": self.iterations,
            "model": self.model,
            "elapsed_s": round(self.elapsed_s, 3),
            "root": self.root.model_dump(),
            "sub": self.sub.model_dump(),
            "total": self.total.model_dump(),
            "error": self.error,
            "children": self.children,
            "tool_calls": self.tool_calls,
            "read_chars": self.read_chars,
            "learning": self.learning.model_dump(),
        }


def with_roots_for(settings: Settings, paths: list[str]) -> Settings:
    """The settings with each path's directory (or the directory itself) added to the roots."""
    roots = list(settings.roots)
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            raise AskError(f"{given}: no such file or directory")
        path = path.resolve()
        directory = path if path.is_dir() else path.parent
        if not any(directory == root or directory.is_relative_to(root) for root in roots):
            roots.append(directory)
    return settings.model_copy(update={"roots": tuple(roots)})


async def ask(settings: Settings, paths: list[str], question: str, trace_html: Path | None = None) -> AskResult:
    if not question.strip():
        raise AskError("the question is empty: rlm-mcp ask PATH... 'what to find out'")
    settings = with_roots_for(settings, paths)
    memory = Memory(settings)
    router = Router(settings, memory)
    store = SessionStore(settings.workspace)
    session_id = secrets.token_hex(12)
    started = time.monotonic()
    try:
        try:
            backend = await router.backend_for(None)
        except SubCallError as exc:
            raise AskError(str(exc)) from None
        if not can_chat(backend):
            raise AskError(
                f"the {backend.name} backend cannot drive a root model (no tool use here); "
                "set ANTHROPIC_API_KEY or RLM_MCP_OPENAI_BASE_URL"
            )
        model = settings.root_model or settings.sub_model or backend.default_model or "default"
        async with anyio.create_task_group() as group:
            session = Session(session_id, settings, router, store, spawn=group.start_soon,
                              services=worker_services(), ephemeral=True)  # fmt: skip
            try:
                contexts = await _load(session, paths)
                loop = RootLoop(
                    session,
                    backend,
                    model,
                    settings.child_max_iterations,
                    started + settings.child_timeout_s,
                    settings.max_depth > 1,
                )
                with session.tracer.event("rlm", "rlm-mcp ask", prompt=question, level=1) as event:
                    outcome: RootOutcome = await loop.run(question, contexts)
                    event.set(outcome=outcome.stopped, answer=outcome.answer, iterations=outcome.iterations)
            finally:
                worked = session.llm.usage.model_copy()
                with anyio.CancelScope(shield=True):
                    await session.close()  # distils the run, if distillation is on-close
            if trace_html is not None:
                from rlm_mcp.viewer import write_html

                await anyio.to_thread.run_sync(write_html, session.tracer.path, trace_html)
        return AskResult(
            answer=outcome.answer,
            stopped=outcome.stopped,
            partial=outcome.partial,
            iterations=outcome.iterations,
            model=model,
            elapsed_s=time.monotonic() - started,
            root=outcome.root,
            total=worked,
            error=outcome.error,
            children=session.child_records,
            tool_calls=outcome.tool_calls,
            read_chars=outcome.read_chars,
            learning=usage_since(session.llm.usage, worked),
        )
    finally:
        with anyio.CancelScope(shield=True):
            await router.aclose()
            memory.close()
            await anyio.to_thread.run_sync(store.delete, session_id)


async def _load(session: Session, paths: list[str]) -> dict[str, str]:
    contexts: dict[str, str] = {}
    for index, path in enumerate(paths):
        name = "context" if index == 0 else f"context_{index + 1}"
        try:
            loaded = await session.load_context(name=name, path=path, text=None)
        except UserError as exc:
            raise AskError(f"cannot load {path}: {exc}") from None
        files = f", {loaded.files:,} files" if loaded.files else ""
        contexts[name] = f"{loaded.kind} from {path}, {loaded.chars:,} chars{files}"
    return contexts
