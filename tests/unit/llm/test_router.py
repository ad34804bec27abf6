"""The router's rules against a fake backend in memory: retries, the window, the cache, the caps, costs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.router import Router, SessionLLM
from rlm_mcp.llm.types import BaseBackend, Completion, SubCall
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


class FakeBackend(BaseBackend):
    """Answers with the prompt; `failures` scripts errors by prompt; counts what is in flight."""

    name = "fake"
    default_model: str | None = "claude-haiku-4-5"

    def __init__(self, limiter: anyio.CapacityLimiter | None = None, **completion: Any) -> None:
        self.calls: list[str] = []
        self.failures: dict[str, list[SubCallError]] = {}
        self.in_flight = self.max_in_flight = 0
        self.completion = completion
        if limiter is not None:
            self.limiter = limiter

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        self.calls.append(call.prompt)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await anyio.sleep(0.01)
            if self.failures.get(call.prompt):
                raise self.failures[call.prompt].pop(0)
            return Completion(f"ans:{call.prompt}", call.model, 100, 10, **self.completion)
        finally:
            self.in_flight -= 1


def session_with(tmp_path: Path, backend: FakeBackend, **overrides: Any) -> SessionLLM:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    overrides.setdefault("retry_base_s", 0.0)
    router = Router(make_settings(tmp_path, data, backend="openai", openai_base_url="http://127.0.0.1:9", **overrides))
    router._backends["openai"] = backend  # the router builds backends lazily; this one is ours
    return SessionLLM(router)


async def test_a_retryable_failure_is_retried_and_a_final_one_is_not(tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.failures = {
        "flaky": [SubCallError("overloaded", kind="overloaded", retryable=True)],
        "bad": [SubCallError("invalid", kind="provider")],
    }
    llm = session_with(tmp_path, backend)
    results = await llm.batch([{"prompt": "flaky"}, {"prompt": "bad"}, {"prompt": "fine"}], None)
    assert [item["ok"] for item in results] == [True, False, True]
    assert backend.calls.count("flaky") == 2 and backend.calls.count("bad") == 1
    assert llm.usage.failures == 1


async def test_an_identical_call_is_answered_from_the_cache(tmp_path: Path) -> None:
    backend = FakeBackend()
    llm = session_with(tmp_path, backend)
    await llm.batch([{"prompt": "same"}], None)
    (again,) = await llm.batch([{"prompt": "same"}], None)
    assert again["cached"] and backend.calls == ["same"] and llm.usage.cache_hits == 1


async def test_a_prompt_over_the_window_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    backend = FakeBackend()
    llm = session_with(tmp_path, backend, sub_window_tokens=1_000)
    backend.default_model = "unknown-model"  # not in the table: the setting's window applies
    (item,) = await llm.batch([{"prompt": "x" * 10_000, "max_tokens": 10}], None)
    assert not item["ok"] and item["kind"] == "window" and backend.calls == []


async def test_a_backends_own_limiter_caps_it_and_the_servers_caps_the_rest(tmp_path: Path) -> None:
    own = FakeBackend(limiter=anyio.CapacityLimiter(2))
    llm = session_with(tmp_path, own, max_concurrency=8)
    await llm.batch([{"prompt": str(i)} for i in range(10)], None)
    assert own.max_in_flight == 2
    shared = FakeBackend()
    llm = session_with(tmp_path, shared, max_concurrency=3)
    await llm.batch([{"prompt": str(i)} for i in range(10)], None)
    assert shared.max_in_flight == 3


async def test_a_cost_the_backend_reports_wins_and_a_subscriptions_is_marked(tmp_path: Path) -> None:
    backend = FakeBackend(cost_usd=0.5, subscription=True)
    llm = session_with(tmp_path, backend)
    await llm.batch([{"prompt": "one"}, {"prompt": "two"}], None)
    assert llm.usage.cost_usd == pytest.approx(1.0) and llm.usage.subscription_usd == pytest.approx(1.0)
