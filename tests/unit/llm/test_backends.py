"""Every backend has what the router calls on it (types.Backend), so the router calls it directly.

The router used to look `limiter`, `reap` and `aclose` up with getattr: a backend that misspelled one was
silently left out of its own concurrency cap, or of reaping and closing. Now the protocol declares them, each
backend has them (from types.BaseBackend or its own), and these tests hold both, for every backend class the
package defines: a new backend module is checked without being listed here.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

import rlm_mcp
from rlm_mcp.llm.types import Backend, ChatBackend, can_chat
from rlm_mcp.replay.record import Recording
from tests.unit.llm.test_router import FakeBackend

PACKAGE = Path(rlm_mcp.__file__).parent
BACKEND_MODULES = sorted(
    [f"rlm_mcp.llm.{path.stem}" for path in (PACKAGE / "llm").glob("*_backend.py")] + ["rlm_mcp.replay.backend"]
)
CHATS = {"AnthropicBackend", "OpenAIBackend", "ReplayBackend"}


def defined_backend_classes() -> set[type]:
    """Every class named *Backend that a backend module defines (not one it imports)."""
    found = set()
    for name in BACKEND_MODULES:
        module = importlib.import_module(name)
        found |= {
            value
            for attribute, value in vars(module).items()
            if inspect.isclass(value) and attribute.endswith("Backend") and value.__module__ == name
        }
    return found


@pytest.fixture
async def backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[list[Backend]]:
    """One instance of every backend, built without sending anything anywhere."""
    from rlm_mcp.llm.anthropic_backend import AnthropicBackend
    from rlm_mcp.llm.claude_code_backend import ClaudeCodeBackend
    from rlm_mcp.llm.codex_backend import CodexBackend
    from rlm_mcp.llm.openai_backend import OpenAIBackend
    from rlm_mcp.llm.sampling_backend import SamplingBackend
    from rlm_mcp.replay.backend import ReplayBackend

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    built: list[Backend] = [
        AnthropicBackend(2),
        OpenAIBackend("http://127.0.0.1:9/v1", None, 2),
        ClaudeCodeBackend("/bin/false", 1, False, environ={}),
        CodexBackend("/bin/false", 1, False, environ={}),
        SamplingBackend(object()),
        ReplayBackend(Recording(tmp_path / "trace.jsonl", [])),
        FakeBackend(),
    ]
    yield built
    for backend in built:
        await backend.aclose()


@pytest.mark.anyio
async def test_every_backend_has_every_member_the_router_calls(backends: list[Backend]) -> None:
    assert defined_backend_classes() <= {type(backend) for backend in backends}, "a backend class is not checked"
    for backend in backends:
        kind = type(backend).__name__
        assert isinstance(backend, Backend), kind
        assert isinstance(backend.name, str), kind
        assert backend.limiter is None or isinstance(backend.limiter, anyio.CapacityLimiter), kind
        assert inspect.iscoroutinefunction(backend.complete), kind
        assert inspect.iscoroutinefunction(backend.aclose), kind
        assert callable(backend.reap) and not inspect.iscoroutinefunction(backend.reap), kind
        backend.reap()  # nothing to stop yet: a no-op, not an error
        assert can_chat(backend) == isinstance(backend, ChatBackend) == (kind in CHATS), kind


def test_nothing_in_the_llm_package_looks_a_backend_member_up_by_name() -> None:
    lookup = re.compile(r"\b(?:getattr|hasattr)\(\s*[\w.]*backend", re.IGNORECASE)
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
        for path in sorted((PACKAGE / "llm").rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if lookup.search(line)
    ]
    assert found == []
