"""The fake providers are only useful if the real clients cannot tell them from the real APIs.

These tests drive the fakes with the real `anthropic` SDK and a plain `httpx2` client, so a router test that
passes against them exercises the same request building, response parsing and error mapping as production.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import anthropic
import anyio
import httpx2
import pytest

from tests.fakes import FakeProvider, ProviderError, count_tokens

pytestmark = pytest.mark.anyio


def sdk(provider: FakeProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="test-key", base_url=provider.base_url, max_retries=0)


async def test_anthropic_sdk_parses_message_and_usage() -> None:
    async with FakeProvider.running() as provider:
        client = sdk(provider)
        system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
        message = await client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=100,
            system=system,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": [{"type": "text", "text": "hello there"}]}],
        )
        await client.close()

    assert isinstance(message, anthropic.types.Message)
    assert message.id.startswith("msg_")
    assert message.model == "claude-haiku-4-5"
    assert message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "echo: hello there"  # type: ignore[union-attr]
    assert message.usage.input_tokens == count_tokens("You are terse." + "hello there")
    assert message.usage.output_tokens == count_tokens("echo: hello there")
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0
    assert message._request_id is not None and message._request_id.startswith("req_")

    (request,) = provider.requests
    assert request.path == "/v1/messages" and request.api == "anthropic"
    assert request.body["system"] == system
    assert (request.model, request.system, request.prompt) == ("claude-haiku-4-5", "You are terse.", "hello there")
    # This SDK version sends the key as "authorization: Bearer"; older ones used x-api-key. Either is recorded.
    assert "anthropic-version" in request.headers and request.api_key == "test-key"
    assert provider.api_keys == ["test-key"]
    assert provider.status_counts == {200: 1}


async def test_answer_function_sees_the_prompt_and_may_be_async() -> None:
    async def find_needle(prompt: str, system: str | None, model: str) -> str:
        await anyio.sleep(0)
        return "FOUND" if "needle" in prompt else "NOT FOUND"

    async with FakeProvider.running(answer=find_needle) as provider:
        client = sdk(provider)
        answers = []
        for chunk in ["hay hay hay", "hay needle hay"]:
            message = await client.messages.create(
                model="m", max_tokens=10, messages=[{"role": "user", "content": chunk}]
            )
            answers.append(message.content[0].text)  # type: ignore[union-attr]
        # max_tokens is enforced like the real API: the answer is cut and stop_reason says so.
        provider.answer = lambda prompt, system, model: "x" * 100
        cut = await client.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "long"}])
        await client.close()
    assert answers == ["NOT FOUND", "FOUND"]
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 5
    assert cut.content[0].text == "x" * 20  # type: ignore[union-attr]


async def test_anthropic_errors_map_to_sdk_exceptions() -> None:
    expected = [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (400, anthropic.BadRequestError, "invalid_request_error"),
    ]
    async with FakeProvider.running() as provider:
        client = sdk(provider)
        for status, exception, error_type in expected:
            provider.fail_next(1, status=status, retry_after=2 if status == 429 else None)
            with pytest.raises(exception) as caught:
                await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "q"}])
            error = caught.value
            assert isinstance(error, anthropic.APIStatusError)
            assert error.status_code == status
            assert error.type == error_type
            assert error.request_id is not None and error.request_id.startswith("req_")
            assert error.body["type"] == "error"  # type: ignore[index]
            assert error.response.headers.get("retry-after") == ("2" if status == 429 else None)

        # Content-triggered failures, and failures raised by the answer function.
        provider.fail_when("BOOM", status=400, message="bad chunk")
        with pytest.raises(anthropic.BadRequestError, match="bad chunk"):
            await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "a BOOM"}])

        def picky(prompt: str, system: str | None, model: str) -> str:
            if prompt == "slow down":
                raise ProviderError(529)
            return "fine"

        provider.answer = picky
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "slow down"}])
        assert caught.value.status_code == 529
        ok = await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "fine?"}])
        assert ok.content[0].text == "fine"  # type: ignore[union-attr]

        # A wrong key is refused like the real API does.
        provider.require_api_key = "other-key"
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "q"}])
        await client.close()
    assert provider.status_counts == {429: 1, 529: 2, 500: 1, 400: 2, 200: 1, 401: 1}
    assert provider.count == 8


async def test_openai_chat_completions_shape_and_errors() -> None:
    async with FakeProvider.running() as provider, httpx2.AsyncClient(trust_env=False) as http:
        url = provider.openai_base_url + "/chat/completions"
        headers = {"authorization": "Bearer sk-test"}
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "ping"}],
            "max_tokens": 50,
        }
        response = await http.post(url, json=body, headers=headers)
        assert response.status_code == 200
        data = response.json()
        assert data["id"].startswith("chatcmpl-") and data["object"] == "chat.completion"
        assert isinstance(data["created"], int) and data["model"] == "gpt-4o-mini"
        assert data["choices"] == [
            {"index": 0, "message": {"role": "assistant", "content": "echo: ping"}, "finish_reason": "stop"}
        ]
        prompt_tokens, completion_tokens = count_tokens("Be brief." + "ping"), count_tokens("echo: ping")
        assert data["usage"] == {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

        provider.fail_next(1, status=429, retry_after=1)
        response = await http.post(url, json=body, headers=headers)
        assert response.status_code == 429 and response.headers["retry-after"] == "1"
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == "rate_limit_exceeded"

        response = await http.post(url, json={**body, "max_completion_tokens": 1, "max_tokens": None}, headers=headers)
        assert response.json()["choices"][0]["finish_reason"] == "length"

        response = await http.post(url, json={"model": "x"}, headers=headers)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    assert provider.api_keys == ["sk-test"] * 4
    assert provider.requests[0].system == "Be brief." and provider.requests[0].prompt == "ping"


async def test_max_in_flight_reflects_real_concurrency() -> None:
    async with FakeProvider.running(latency=0.2) as provider:
        client = sdk(provider)

        async def call(i: int, limiter: anyio.CapacityLimiter | None = None) -> None:
            if limiter is None:
                await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": f"{i}"}])
                return
            async with limiter:
                await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": f"{i}"}])

        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(call, i)
        assert provider.max_in_flight == 10 and provider.in_flight == 0
        assert sorted(provider.prompts) == [str(i) for i in range(10)]

        provider.reset()
        limiter = anyio.CapacityLimiter(3)
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(call, i, limiter)
        assert provider.max_in_flight == 3 and provider.count == 10 and provider.status_counts == {200: 10}
        await client.close()


async def test_cancelled_request_counts_as_disconnect() -> None:
    async with FakeProvider.running(latency=2) as provider:
        client = sdk(provider)
        async with anyio.create_task_group() as tg:
            tg.start_soon(
                lambda: client.messages.create(model="m", max_tokens=9, messages=[{"role": "user", "content": "q"}])
            )
            with anyio.fail_after(2):
                while not provider.in_flight:  # cancel only once the request has reached the provider
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        await client.close()
        with anyio.fail_after(2):
            while provider.in_flight:
                await anyio.sleep(0.01)
    assert provider.disconnects == 1 and provider.status_counts == {}


async def test_jitter_is_seeded_and_prompt_cache_is_simulated() -> None:
    long_system = "rules " * 1000  # 6,000 chars: 1,500 tokens, above the 1,024-token minimum
    system = [{"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}]
    async with FakeProvider.running(prompt_cache=True, jitter=(0.0, 0.05), seed=7) as provider:
        client = sdk(provider)
        usages = []
        for _ in range(2):
            message = await client.messages.create(
                model="m",
                max_tokens=10,
                system=system,  # type: ignore[arg-type]
                messages=[{"role": "user", "content": "q"}],
            )
            usages.append(message.usage)
        await client.close()
    cached = count_tokens(long_system)
    assert (usages[0].cache_creation_input_tokens, usages[0].cache_read_input_tokens) == (cached, 0)
    assert (usages[1].cache_creation_input_tokens, usages[1].cache_read_input_tokens) == (0, cached)
    for usage in usages:
        total = usage.input_tokens + usage.cache_creation_input_tokens + usage.cache_read_input_tokens  # type: ignore[operator]
        assert total == count_tokens(long_system + "q")
    # Same seed, same delays in arrival order.
    assert FakeProvider(jitter=(0, 1), seed=3)._draw_delay(None) == FakeProvider(jitter=(0, 1), seed=3)._draw_delay(
        None
    )


def test_thread_mode_serves_other_threads_and_processes() -> None:
    with FakeProvider.start_in_thread(answer=lambda prompt, system, model: prompt.upper()) as provider:
        client = anthropic.Anthropic(api_key="thread-key", base_url=provider.base_url, max_retries=0)
        message = client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "abc"}])
        client.close()
        assert message.content[0].text == "ABC"  # type: ignore[union-attr]

        # A subprocess (like a server under test) reaches it over loopback.
        script = (
            "import json, sys, urllib.request\n"
            "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
            "body = json.dumps({'model': 'm', 'messages': [{'role': 'user', 'content': 'sub'}]}).encode()\n"
            "request = urllib.request.Request(sys.argv[1], body, {'content-type': 'application/json'})\n"
            "print(opener.open(request, timeout=5).read().decode())\n"
        )
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-c", script, provider.openai_base_url + "/chat/completions"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "SUB"
        assert time.monotonic() - started < 5
    assert provider.count == 2 and provider.api_keys == ["thread-key", None]
    provider.stop()  # idempotent
