"""Sub-calls to any OpenAI-compatible chat completions endpoint: Ollama, vLLM, LM Studio, OpenRouter."""

from __future__ import annotations

import json
from typing import Any

import httpx2

from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.http import ShardedTransport, status_error
from rlm_mcp.llm.pricing import estimate_tokens
from rlm_mcp.llm.types import BaseBackend, ChatReply, ChatRequest, Completion, SubCall, ToolCall, Turn


class OpenAIBackend(BaseBackend):
    name = "openai"
    default_model: str | None = "gpt-4o-mini"

    def __init__(self, base_url: str, api_key: str | None, concurrency: int) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._client = httpx2.AsyncClient(headers=headers, transport=ShardedTransport(concurrency))

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        messages = [{"role": "system", "content": call.system}] if call.system else []
        messages.append({"role": "user", "content": call.prompt})
        data = await self._post({"model": call.model, "messages": messages, "max_tokens": call.max_tokens}, timeout_s)
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise SubCallError(f"unexpected response from {self._url}: {str(data)[:200]}", kind="provider") from None
        usage = data.get("usage") or {}
        if "prompt_tokens" in usage and "completion_tokens" in usage:
            return Completion(text, data.get("model", call.model), usage["prompt_tokens"], usage["completion_tokens"])
        return Completion(text, call.model, estimate_tokens(call.system, call.prompt), estimate_tokens(text))

    async def chat(self, request: ChatRequest, timeout_s: float) -> ChatReply:
        messages: list[dict[str, Any]] = [{"role": "system", "content": request.system}]
        for turn in request.turns:
            messages.extend(_messages(turn))
        tools = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.schema}}
            for t in request.tools
        ]
        body = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens, "tools": tools}
        data = await self._post(body, timeout_s)
        try:
            message = data["choices"][0]["message"]
            calls = tuple(_tool_call(item) for item in message.get("tool_calls") or [])
            text = message.get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError, ValueError):
            raise SubCallError(f"unexpected response from {self._url}: {str(data)[:200]}", kind="provider") from None
        usage = data.get("usage") or {}
        if "prompt_tokens" in usage and "completion_tokens" in usage:
            used = (usage["prompt_tokens"], usage["completion_tokens"])
        else:
            arguments = json.dumps([c.arguments for c in calls])
            used = (estimate_tokens(json.dumps(messages)), estimate_tokens(text, arguments))
        return ChatReply(text, calls, data.get("model", request.model), *used)

    async def _post(self, body: dict[str, Any], timeout_s: float) -> Any:
        try:
            response = await self._client.post(self._url, json=body, timeout=timeout_s)
        except httpx2.TimeoutException:
            raise SubCallError(f"no answer within {timeout_s:g} s", kind="timeout", retryable=True) from None
        except httpx2.HTTPError as exc:
            raise SubCallError(f"cannot reach {self._url}: {exc}", kind="connection", retryable=True) from None
        if response.status_code >= 400:
            raise status_error(response.status_code, _error_message(response))
        try:
            return response.json()
        except ValueError:
            raise SubCallError(
                f"unexpected response from {self._url}: {response.text[:200]}", kind="provider"
            ) from None

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_message(response: httpx2.Response) -> str:
    try:
        error = response.json().get("error")
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(error)
    except ValueError:
        return response.text[:200]


def _messages(turn: Turn) -> list[dict[str, Any]]:
    """A turn in the chat completions format: each tool result is a message of its own."""
    if turn.role == "tool":
        return [{"role": "tool", "tool_call_id": r.call_id, "content": r.text} for r in turn.results]
    if turn.role == "assistant":
        message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
        if turn.calls:
            message["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                for c in turn.calls
            ]
        return [message]
    return [{"role": "user", "content": turn.text}]


def _tool_call(item: dict[str, Any]) -> ToolCall:
    """A model's tool call; arguments that are not a JSON object become none, and the tool says what is missing."""
    function = item["function"]
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError:
        arguments = {}
    return ToolCall(str(item.get("id", "")), str(function["name"]), arguments if isinstance(arguments, dict) else {})
