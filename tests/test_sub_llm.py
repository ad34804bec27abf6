"""Sub-calls end to end: REPL code -> worker protocol -> router -> real SDK/HTTP -> fake provider on loopback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types
import pytest
from mcp import Client

from rlm_mcp.llm.http import ShardedTransport
from rlm_mcp.surface.server import build_server
from testkit.fakes import FakeProvider
from tests.conftest import load, make_settings, run, text_of, value_of

pytestmark = pytest.mark.anyio

API_KEY = "sk-ant-test-0123456789-SECRET"


@pytest.fixture
async def provider(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeProvider]:
    async with FakeProvider.running(answer=lambda prompt, system, model: f"ans:{prompt}") as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        yield fake


def connect(tmp_path: Path, data_dir: Path, **overrides: Any) -> Client:
    overrides.setdefault("retry_base_s", 0.01)
    return Client(build_server(make_settings(tmp_path, data_dir, **overrides)))


async def test_a_batch_comes_back_in_input_order_under_random_delays(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    provider.jitter = (0.0, 0.15)
    async with connect(tmp_path, data_dir) as client:
        result = await run(client, "answers = llm_query_batched([f'q{i}' for i in range(40)])\nanswers[:3]")
        assert result.structured_content is not None, text_of(result)
        assert await value_of(client, "answers == [f'ans:q{i}' for i in range(40)]") == "True"
        usage = result.structured_content["sub_calls"]
        assert usage["calls"] == 40 and usage["failures"] == 0 and usage["input_tokens"] > 0
        assert usage["cost_usd"] > 0  # claude-haiku-4-5 is in the price table
        assert "Sub-calls: 40 calls, 0 failed" in text_of(result)
    assert provider.count == 40
    assert set(provider.api_keys) == {API_KEY}  # the server, not the worker, holds and uses the key
    assert {request.model for request in provider.requests} == {"claude-haiku-4-5"}


async def test_in_flight_calls_never_exceed_the_limit(provider: FakeProvider, tmp_path: Path, data_dir: Path) -> None:
    provider.latency = 0.05
    async with connect(tmp_path, data_dir, max_concurrency=4) as client:
        assert await value_of(client, "len(llm_query_batched([str(i) for i in range(40)]))") == "40"
    assert provider.max_in_flight == 4


async def test_429_and_529_are_retried(provider: FakeProvider, tmp_path: Path, data_dir: Path) -> None:
    provider.fail_next(2, status=429)
    provider.fail_next(1, status=529)
    async with connect(tmp_path, data_dir) as client:
        assert await value_of(client, "llm_query('hello')") == "'ans:hello'"
    assert provider.status_counts[429] == 2 and provider.status_counts[529] == 1 and provider.status_counts[200] == 1


async def test_retries_stop_and_the_error_says_how_many_were_made(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    provider.fail_next(10, status=500)
    async with connect(tmp_path, data_dir, sub_retries=2) as client:
        result = await run(client, "llm_query('x')")
        data = result.structured_content
        assert data is not None and data["error_type"] == "LLMError"
        assert "500" in data["error"] and "after 3 attempts" in data["error"]
    assert provider.count == 3


async def test_a_failed_item_does_not_fail_the_batch(provider: FakeProvider, tmp_path: Path, data_dir: Path) -> None:
    provider.fail_when("BOOM", status=400)
    async with connect(tmp_path, data_dir) as client:
        result = await run(client, "r = llm_query_batched(['a', 'BOOM', 'c'])\n[type(x).__name__ for x in r]")
        data = result.structured_content
        assert data is not None and data["result"] == "['str', 'LLMError', 'str']"
        assert data["sub_calls"]["failures"] == 1 and "1 sub-call(s) failed" in text_of(result)
        assert await value_of(client, "isinstance(r[1], LLMError) and '400' in str(r[1])") == "True"
        assert await value_of(client, "r[0], r[2]") == "('ans:a', 'ans:c')"
    assert provider.status_counts[400] == 1  # a 400 is not retried


async def test_the_call_budget_refuses_before_sending(provider: FakeProvider, tmp_path: Path, data_dir: Path) -> None:
    async with connect(tmp_path, data_dir, max_sub_calls=3) as client:
        result = await run(
            client, "r = llm_query_batched([f'p{i}' for i in range(5)])\nsum(isinstance(x, str) for x in r)"
        )
        assert result.structured_content is not None and result.structured_content["result"] == "3"
        assert "budget exhausted" in await value_of(client, "str([x for x in r if isinstance(x, LLMError)][0])")
        later = await run(client, "llm_query('one more')")
        assert later.structured_content is not None and "3 sub-calls" in later.structured_content["error"]
        assert await value_of(client, "sum(range(10))") == "45"  # code without sub-calls keeps working
    assert provider.count == 3


async def test_the_money_budget_holds_under_concurrency(provider: FakeProvider, tmp_path: Path, data_dir: Path) -> None:
    # claude-haiku-4-5 at $1/$5 per million tokens: each call reserves ~2,048 output tokens ~ $0.0103.
    async with connect(tmp_path, data_dir, max_cost_usd=0.025) as client:
        result = await run(client, "r = llm_query_batched([f'p{i}' for i in range(10)])")
        usage = result.structured_content["sub_calls"]  # type: ignore[index]
        assert 1 <= usage["calls"] < 10 and usage["failures"] == 10 - usage["calls"]
        assert usage["cost_usd"] <= 0.025
        assert "money budget exhausted" in await value_of(client, "str([x for x in r if isinstance(x, LLMError)][0])")
        unknown = await run(client, "llm_query('x', model='mystery-model')")
        assert "RLM_MCP_PRICES" in unknown.structured_content["error"]  # type: ignore[index]
    assert provider.count == usage["calls"]


async def test_identical_calls_are_answered_from_the_cache(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    async with connect(tmp_path, data_dir) as client:
        code = "llm_query('same question', system='be brief')"
        await run(client, code)
        again = await run(client, code)
        data = again.structured_content
        assert data is not None and data["result"] == "'ans:same question'"
        assert data["sub_calls"]["cache_hits"] == 1 and data["sub_calls"]["calls"] == 0
        await run(client, "llm_query('same question', system='be verbose')")  # a different call is sent
    assert provider.count == 2


async def test_a_prompt_beyond_the_window_is_refused_before_sending(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    async with connect(tmp_path, data_dir) as client:
        result = await run(client, "llm_query('x' * 900_000)")
        assert "exceeds the 200,000-token window of claude-haiku-4-5" in result.structured_content["error"]  # type: ignore[index]
    assert provider.count == 0


async def test_without_a_backend_the_error_names_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    async with connect(tmp_path, data_dir) as client:
        result = await run(client, "llm_query('hi')")
        error = result.structured_content["error"]  # type: ignore[index]
        for name in ("ANTHROPIC_API_KEY", "RLM_MCP_OPENAI_BASE_URL", "RLM_MCP_BACKEND"):
            assert name in error
        refused = await client.call_tool("sub_query", {"prompt": "hi"})
        assert refused.is_error and "ANTHROPIC_API_KEY" in text_of(refused)
        assert await value_of(client, "1 + 1") == "2"


async def test_sub_query_sends_a_repl_expression_to_an_openai_compatible_endpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    (data_dir / "doc.txt").write_text("part one about cats\n---\npart two: the code word is PAPRIKA\n")

    def answer(prompt: str, system: str | None, model: str) -> str:
        return "PAPRIKA" if "PAPRIKA" in prompt else "not found"

    async with FakeProvider.running(answer=answer) as fake:
        settings = {"openai_base_url": fake.openai_base_url, "openai_api_key": "local-key"}
        async with connect(tmp_path, data_dir, **settings) as client:
            await load(client, path="doc.txt")
            await run(client, "chunks = context.split('---')")
            result = await client.call_tool("sub_query", {"prompt": "What is the code word?", "context": "chunks[1]"})
            assert not result.is_error, text_of(result)
            data = result.structured_content
            assert data is not None and data["answer"] == "PAPRIKA"
            assert data["backend"] == "openai" and data["model"] == "gpt-4o-mini"
            assert data["input_tokens"] > 0 and data["cost_usd"] > 0 and data["session_usage"]["calls"] == 1
            bad = await client.call_tool("sub_query", {"prompt": "?", "context": "chunks[99]"})
            assert bad.is_error and "IndexError" in text_of(bad)
        (request,) = fake.requests
        assert "<context>" in request.prompt and "PAPRIKA" in request.prompt and "cats" not in request.prompt
        assert request.api_key == "local-key" and request.path == "/v1/chat/completions"


async def test_sampling_goes_back_to_the_clients_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    seen: list[str] = []

    async def sampling(context: Any, params: mcp_types.CreateMessageRequestParams) -> mcp_types.CreateMessageResult:
        prompt = params.messages[0].content.text  # type: ignore[union-attr]
        seen.append(prompt)
        return mcp_types.CreateMessageResult(
            role="assistant", content=mcp_types.TextContent(type="text", text=prompt.upper()), model="client-model"
        )

    server = build_server(make_settings(tmp_path, data_dir))
    async with Client(server, mode="legacy", sampling_callback=sampling) as client:
        assert await value_of(client, "llm_query_batched(['abc', 'def'])") == "['ABC', 'DEF']"
        result = await client.call_tool("sub_query", {"prompt": "xyz"})
        data = result.structured_content
        assert data is not None and data["answer"] == "XYZ" and data["backend"] == "sampling"
        assert data["model"] == "client-model"
    assert sorted(seen) == ["abc", "def", "xyz"]


@pytest.mark.parametrize("sandbox", ["auto", "off"])
async def test_the_api_key_is_invisible_to_repl_code(tmp_path: Path, data_dir: Path, sandbox: str) -> None:
    """Launched as a host launches it, with the key in the server's environment: the REPL cannot find it.

    With the sandbox off as well: the scrubbed environment and the non-dumpable server do not depend on it.
    """
    from mcp import StdioServerParameters

    from tests.test_stdio import console_script

    fake = FakeProvider.start_in_thread(answer=lambda prompt, system, model: "pong")
    try:
        env = {"PATH": os.environ.get("PATH", ""), "ANTHROPIC_API_KEY": API_KEY, "ANTHROPIC_BASE_URL": fake.base_url}
        params = StdioServerParameters(
            command=console_script(),
            args=[
                *("--root", str(data_dir), "--workspace", str(tmp_path / "ws")),
                *("--sandbox", sandbox, "--structured-content"),
            ],
            env=env,
        )
        probe = f"""
import os, glob, subprocess
key = {API_KEY!r}
found = [k for k, v in os.environ.items() if key in v or k.startswith("ANTHROPIC")]
for path in (f"/proc/{{os.getppid()}}/environ", f"/proc/{{os.getppid()}}/mem"):
    try:
        with open(path, "rb") as handle:
            found.append(path) if key.encode() in handle.read(1 << 20) else None
    except OSError:
        pass
try:
    shell = subprocess.run(["cat", f"/proc/{{os.getppid()}}/environ"], capture_output=True)
    found += ["cat environ"] if key.encode() in shell.stdout else []
except PermissionError:
    found += [] if {sandbox!r} == "auto" else ["no subprocess with the sandbox off"]
for name in glob.glob({str(tmp_path)!r} + "/ws/**", recursive=True):
    if os.path.isfile(name) and key.encode() in open(name, "rb").read():
        found.append(name)
found
"""
        async with Client(params) as client:
            assert await value_of(client, probe) == "[]"
            assert await value_of(client, "llm_query('ping')") == "'pong'"
        assert fake.api_keys == [API_KEY]  # the key works: the server used it for the worker's call
    finally:
        fake.stop()


async def test_a_long_system_prompt_is_marked_for_prompt_caching(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    async with connect(tmp_path, data_dir) as client:
        await run(
            client, "instructions = 'Classify the record. ' * 400\nllm_query_batched(['a', 'b'], system=instructions)"
        )
        await run(client, "llm_query('c', system='short')")
    long_calls = [r for r in provider.requests if r.prompt in ("a", "b")]
    for request in long_calls:
        (block,) = request.body["system"]
        assert block["cache_control"] == {"type": "ephemeral"} and block["text"].startswith("Classify")
    (short,) = [r for r in provider.requests if r.prompt == "c"]
    assert short.body["system"] == "short"  # too short to be cached: sent as plain text


async def test_the_token_budget_counts_reservations(provider: FakeProvider, tmp_path: Path, data_dir: Path) -> None:
    # Each call reserves its estimated input plus max_tokens=100; a budget of 250 admits two at a time.
    async with connect(tmp_path, data_dir, max_sub_tokens=250, sub_max_tokens=100) as client:
        result = await run(client, "r = llm_query_batched(['a', 'b', 'c', 'd'])\nsum(isinstance(x, str) for x in r)")
        assert result.structured_content is not None and result.structured_content["result"] == "2"
        assert "token budget exhausted" in await value_of(client, "str([x for x in r if isinstance(x, LLMError)][0])")
    assert provider.count == 2


async def test_a_provider_that_hangs_is_timed_out_and_retried(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    delays = [3.0]  # the first attempt hangs past the 0.5 s per-attempt limit; the retry answers at once

    async def answer(prompt: str, system: str | None, model: str) -> str:
        await anyio.sleep(delays.pop(0) if delays else 0.0)
        return f"late:{prompt}"

    provider.answer = answer
    async with connect(tmp_path, data_dir, sub_timeout_s=0.5) as client:
        assert await value_of(client, "llm_query('tick')") == "'late:tick'"
    assert provider.count == 2 and provider.disconnects == 1


@pytest.mark.parametrize(("concurrency", "pools"), [(4, 1), (16, 4)])
async def test_requests_are_spread_over_small_connection_pools(
    provider: FakeProvider, concurrency: int, pools: int
) -> None:
    transport = ShardedTransport(concurrency)
    async with httpx2.AsyncClient(transport=transport) as client:
        for i in range(3 * pools):
            response = await client.post(provider.openai_base_url + "/chat/completions", json=chat(f"q{i}"))
            assert response.status_code == 200
    # Sequential requests reuse a kept-alive connection within a pool: one connection per pool, taken in turn.
    ports = [request.client_port for request in provider.requests]
    assert len(set(ports)) == pools
    assert ports[:pools] * 3 == ports


def chat(prompt: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": prompt}], "max_tokens": 8}


async def test_a_batch_that_cannot_start_raises_once(
    provider: FakeProvider, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with connect(tmp_path, data_dir, max_sub_calls=2) as client:
        await run(client, "first = llm_query_batched(['a', 'b'])")  # the budget is now spent
        spent = await run(client, "llm_query_batched([f'p{i}' for i in range(91)])")
        data = spent.structured_content
        assert data is not None and data["error_type"] == "LLMError", text_of(spent)
        assert data["error"].count("budget exhausted") == 1 and len(provider.requests) == 2
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    async with connect(tmp_path, data_dir) as client:
        result = await run(client, "llm_query_batched([f'chunk {i}' for i in range(91)])")
        data = result.structured_content
        assert data is not None and data["error_type"] == "LLMError", text_of(result)
        assert data["error"].count("no sub-LLM backend") == 1


async def test_identical_sub_call_errors_are_said_once_with_a_count(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    provider.fail_when("BOOM", status=400)
    async with connect(tmp_path, data_dir) as client:
        result = await run(client, "r = llm_query_batched(['BOOM'] * 40 + ['fine'])")
    note = next(line for line in text_of(result).splitlines() if "sub-call(s) failed" in line)
    assert note.startswith("Note: 40 sub-call(s) failed (40 x ") and "400" in note and len(note) < 600, note


async def test_a_costly_batch_says_its_estimate_and_runs_only_when_confirmed(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    async with connect(tmp_path, data_dir, confirm_batch_usd=0.05) as client:
        # 10 calls of ~1,000 input tokens with answers of up to 2,048 at $1/$5 per million: up to ~$0.11
        asked = await run(client, "r = llm_query_batched(['x' * 4000] * 10)")
        data = asked.structured_content
        assert data is not None and data["error_type"] == "LLMError", text_of(asked)
        assert "may cost up to $0.11" in data["error"] and "confirm=True" in data["error"]
        assert provider.requests == []  # nothing was sent
        confirmed = await run(client, "r = llm_query_batched(['x' * 4000] * 10, confirm=True)\nlen(r)")
        assert confirmed.structured_content["result"] == "10", text_of(confirmed)  # type: ignore[index]
        assert await value_of(client, "len(llm_query_batched(['small'] * 3))") == "3"  # under the threshold
