"""The fake providers are only useful if the real clients cannot tell them from the real APIs.

These tests drive the fakes with the real `anthropic` SDK and a plain `httpx2` client, so a router test that
passes against them exercises the same request building, response parsing and error mapping as production.
The streamed and Responses API tests are what lets the real coding-agent CLIs (which only stream) use the fake.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import anthropic
import anyio
import httpx2
import pytest

from testkit.fakes import FakeProvider, ProviderError, ToolUse, count_tokens

pytestmark = pytest.mark.anyio


def sdk(provider: FakeProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="test-key", base_url=provider.base_url, max_retries=0)


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """(event name, parsed data) of each Server-Sent Event in a whole stream body."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields["event"], json.loads(fields["data"])))
    return events


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


async def test_anthropic_sdk_streams_text_and_usage() -> None:
    async with FakeProvider.running() as provider:
        client = sdk(provider)
        system = "You are terse."
        messages: Any = [{"role": "user", "content": "stream me a reply"}]
        async with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=100, system=system, messages=messages
        ) as stream:
            pieces = [piece async for piece in stream.text_stream]
            message = await stream.get_final_message()

        # The raw events, in the order the real API sends them (the SDK drops the ping).
        raw = await client.messages.create(model="m", max_tokens=100, messages=messages, stream=True)
        kinds = [event.type async for event in raw]

        provider.answer = lambda prompt, system, model: "x" * 100
        async with client.messages.stream(model="m", max_tokens=5, messages=messages) as stream:
            cut = await stream.get_final_message()
        await client.close()

    answer = "echo: stream me a reply"
    assert len(pieces) > 1 and "".join(pieces) == answer
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == answer  # type: ignore[union-attr]
    assert (message.model, message.stop_reason, message.id[:4]) == ("claude-haiku-4-5", "end_turn", "msg_")
    assert message.usage.input_tokens == count_tokens(system + "stream me a reply")
    assert message.usage.output_tokens == count_tokens(answer)
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert set(kinds[2:-3]) == {"content_block_delta"} and len(kinds[2:-3]) > 1
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 5
    assert cut.content[0].text == "x" * 20  # type: ignore[union-attr]

    # Streamed requests are recorded and counted like any other.
    assert [(r.stream, r.status, r.api) for r in provider.requests] == [(True, 200, "anthropic")] * 3
    assert (provider.requests[0].system, provider.requests[0].prompt) == (system, "stream me a reply")
    assert provider.count == 3 and provider.in_flight == 0 and provider.api_keys == ["test-key"] * 3


async def test_anthropic_stream_of_a_tool_call_and_cached_usage() -> None:
    long_system = "rules " * 1000
    system: Any = [{"type": "text", "text": long_system, "cache_control": {"type": "ephemeral"}}]
    messages: Any = [{"role": "user", "content": "weather?"}]
    async with FakeProvider.running(prompt_cache=True) as provider:
        client = sdk(provider)
        async with client.messages.stream(model="m", max_tokens=100, system=system, messages=messages) as stream:
            first = await stream.get_final_message()
        provider.answer = lambda prompt, system, model: ToolUse("get_weather", {"city": "Paris", "days": [1, 2]})
        async with client.messages.stream(model="m", max_tokens=100, system=system, messages=messages) as stream:
            partial = [event.partial_json async for event in stream if event.type == "input_json"]
            call = await stream.get_final_message()
        await client.close()

    cached = count_tokens(long_system)
    assert (first.usage.cache_creation_input_tokens, first.usage.cache_read_input_tokens) == (cached, 0)
    assert first.usage.input_tokens == count_tokens(long_system + "weather?") - cached
    assert call.stop_reason == "tool_use" and [block.type for block in call.content] == ["tool_use"]
    block = call.content[0]
    assert block.type == "tool_use" and block.name == "get_weather" and block.id.startswith("toolu_")
    assert block.input == {"city": "Paris", "days": [1, 2]}
    assert len(partial) > 1  # the input arrives as several input_json_delta pieces
    assert call.usage.output_tokens == count_tokens(json.dumps(block.input))


async def test_errors_before_a_stream_are_json_with_their_status() -> None:
    async with FakeProvider.running() as provider, httpx2.AsyncClient(trust_env=False) as http:
        client = sdk(provider)
        messages: Any = [{"role": "user", "content": "q"}]
        provider.fail_next(1, status=529)
        with pytest.raises(anthropic.OverloadedError) as caught:
            async with client.messages.stream(model="m", max_tokens=10, messages=messages) as stream:
                await stream.get_final_message()
        assert caught.value.status_code == 529 and caught.value.type == "overloaded_error"

        provider.fail_next(1, status=429, retry_after=3)
        body = {"model": "m", "max_tokens": 10, "stream": True, "messages": messages}
        response = await http.post(provider.base_url + "/v1/messages", json=body)
        assert response.status_code == 429 and response.headers["content-type"] == "application/json"
        assert response.headers["retry-after"] == "3" and response.json()["error"]["type"] == "rate_limit_error"

        # Refused before any model work, streamed or not: a bad body (400) and a wrong key (401).
        response = await http.post(provider.base_url + "/v1/messages", json={**body, "max_tokens": None})
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
        provider.require_api_key = "right-key"
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.create(model="m", max_tokens=10, messages=messages, stream=True)
        url = provider.openai_base_url + "/responses"
        response = await http.post(url, json={"model": "gpt", "input": "q", "stream": True})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"

        provider.require_api_key = None
        provider.fail_next(1, status=500, message="boom")
        response = await http.post(url, json={"model": "gpt", "input": "q", "stream": True})
        assert response.status_code == 500 and response.headers["content-type"] == "application/json"
        assert response.json()["error"] == {"message": "boom", "type": "server_error", "param": None, "code": None}
        await client.close()
    assert provider.status_counts == {529: 1, 429: 1, 400: 1, 401: 2, 500: 1}
    assert all(request.stream for request in provider.requests if request.status != 400)


async def test_responses_api_plain_parses_every_input_shape() -> None:
    async with FakeProvider.running() as provider, httpx2.AsyncClient(trust_env=False) as http:
        url = provider.openai_base_url + "/responses"
        headers = {"authorization": "Bearer sk-responses"}
        response = await http.post(url, json={"model": "gpt-5.5", "input": "ping", "instructions": "Be brief."})
        assert response.status_code == 200 and response.headers["x-request-id"].startswith("req_")
        data = response.json()
        assert data["id"].startswith("resp_") and data["object"] == "response" and data["status"] == "completed"
        assert (data["model"], data["instructions"], data["incomplete_details"]) == ("gpt-5.5", "Be brief.", None)
        (item,) = data["output"]
        assert (item["type"], item["role"], item["status"]) == ("message", "assistant", "completed")
        assert item["content"] == [{"type": "output_text", "text": "echo: ping", "annotations": [], "logprobs": []}]
        input_tokens, output_tokens = count_tokens("Be brief." + "ping"), count_tokens("echo: ping")
        assert data["usage"] == {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        }

        # Typed message items with content parts, as Codex sends them: developer messages join the system prompt.
        typed = [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Rules."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<env/>"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "the question"}]},
        ]
        body = {"model": "gpt-5.5", "instructions": "Base.", "input": typed, "max_output_tokens": 2}
        data = (await http.post(url, json=body, headers=headers)).json()
        assert data["output"][0]["content"][0]["text"] == "echo: th"  # cut to 2 tokens of 4 chars
        assert (data["status"], data["incomplete_details"]) == ("incomplete", {"reason": "max_output_tokens"})
        # The older bare {"role", "content"} shape.
        bare = [{"role": "system", "content": "Sys."}, {"role": "user", "content": "bare"}]
        data = (await http.post(url, json={"model": "m", "input": bare}, headers=headers)).json()
        assert data["output"][0]["content"][0]["text"] == "echo: bare"

        response = await http.post(url, json={"model": "m", "input": []}, headers=headers)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
    first, second, third, bad = provider.requests
    assert (first.api, first.path, first.model, first.system, first.prompt) == (
        "responses",
        "/v1/responses",
        "gpt-5.5",
        "Be brief.",
        "ping",
    )
    assert (second.system, second.prompt) == ("Base.\nRules.", "the question")
    assert second.text == "Base.\nRules." + "<env/>" + "ok" + "the question"
    assert (third.system, third.prompt) == ("Sys.", "bare")
    assert provider.api_keys == [None, "sk-responses", "sk-responses", "sk-responses"]
    assert bad.status == 400 and not any(request.stream for request in provider.requests)


async def test_responses_api_streams_events_as_openai_does() -> None:
    async with FakeProvider.running() as provider, httpx2.AsyncClient(trust_env=False) as http:
        url = provider.openai_base_url + "/responses"
        body = {"model": "gpt-5.5", "instructions": "Be brief.", "input": "stream please", "stream": True}
        async with http.stream("POST", url, json=body, headers={"authorization": "Bearer sk-s"}) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            text = "".join([chunk async for chunk in response.aiter_text()])
        provider.answer = lambda prompt, system, model: "y" * 40
        cut = await http.post(url, json={**body, "max_output_tokens": 3})

    events = sse_events(text)
    names = [name for name, _ in events]
    assert names[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    deltas = [data["delta"] for name, data in events if name == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "echo: stream please"
    assert names[4 : 4 + len(deltas)] == ["response.output_text.delta"] * len(deltas)
    assert names[4 + len(deltas) :] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert all(data["type"] == name for name, data in events)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    created, done = events[0][1]["response"], events[-1][1]["response"]
    assert (created["status"], created["output"], created["usage"]) == ("in_progress", [], None)
    assert done["status"] == "completed" and done["output"][0]["content"][0]["text"] == "echo: stream please"
    input_tokens, output_tokens = count_tokens("Be brief." + "stream please"), count_tokens("echo: stream please")
    assert (done["usage"]["input_tokens"], done["usage"]["output_tokens"]) == (input_tokens, output_tokens)
    assert done["usage"]["total_tokens"] == input_tokens + output_tokens
    assert events[-4][1]["text"] == "echo: stream please"

    cut_events = sse_events(cut.text)
    assert cut_events[-1][0] == "response.incomplete"
    assert cut_events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert [r.stream for r in provider.requests] == [True, True] and provider.api_keys == ["sk-s", None]
    assert provider.requests[0].prompt == "stream please" and provider.status_counts == {200: 2}


async def test_streams_wait_out_latency_and_count_in_flight() -> None:
    async with FakeProvider.running(latency=0.2) as provider:
        client = sdk(provider)

        async def call(i: int) -> None:
            messages: Any = [{"role": "user", "content": f"{i}"}]
            async with client.messages.stream(model="m", max_tokens=10, messages=messages) as stream:
                await stream.get_final_message()

        started = time.monotonic()
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(call, i)
        elapsed = time.monotonic() - started
        await client.close()
    assert 0.2 <= elapsed < 1.5
    assert provider.max_in_flight == 5 and provider.in_flight == 0 and provider.status_counts == {200: 5}


async def test_side_paths_the_clis_call() -> None:
    async with FakeProvider.running(latency=5) as provider, httpx2.AsyncClient(trust_env=False) as http:
        client = sdk(provider)
        provider.fail_next(1, status=529)
        # count_tokens answers at once and does not use up the failure scripted for the next model call.
        counted = await client.messages.count_tokens(
            model="m", system="Sys.", messages=[{"role": "user", "content": "count these words"}]
        )
        assert counted.input_tokens == count_tokens("Sys." + "count these words")
        hello = await http.head(provider.base_url + "/api/hello")
        assert hello.status_code == 200 and hello.content == b""
        models = await http.get(provider.openai_base_url + "/models")
        assert models.status_code == 200 and models.json() == {"object": "list", "data": [], "models": []}
        missing = await http.get(provider.base_url + "/v1/nowhere")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
        wrong = await http.get(provider.openai_base_url + "/responses")
        assert wrong.status_code == 405 and "error" in wrong.json()
        provider.latency = 0
        with pytest.raises(anthropic.OverloadedError):
            await client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "q"}])
        provider.require_api_key = "other"
        with pytest.raises(anthropic.AuthenticationError):
            await client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "q"}])
        await client.close()
    paths = [(r.method, r.path, r.status, r.api) for r in provider.requests]
    assert paths == [
        ("POST", "/v1/messages/count_tokens", 200, None),
        ("HEAD", "/api/hello", 200, None),
        ("GET", "/v1/models", 200, None),
        ("GET", "/v1/nowhere", 404, None),
        ("GET", "/v1/responses", 405, "responses"),
        ("POST", "/v1/messages", 529, "anthropic"),
        ("POST", "/v1/messages/count_tokens", 401, None),
    ]
