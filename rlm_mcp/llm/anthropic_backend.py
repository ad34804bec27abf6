"""Sub-calls to the Anthropic Messages API through the official SDK.

The SDK's own retries are off: the router retries with its own backoff and budget accounting, and two
layers of retries would multiply the wait and hide the attempts from the trace.
"""

from __future__ import annotations

import anthropic

from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.http import ShardedTransport, status_error
from rlm_mcp.llm.types import BaseBackend, ChatReply, ChatRequest, Completion, SubCall, ToolCall, Turn

# Prompt caching pays from about 1,024 tokens of system prompt (the smallest cacheable prefix); below that
# the cache_control marker is ignored by the API, so it is only sent where it can help.
CACHE_MIN_SYSTEM_CHARS = 4_096


class AnthropicBackend(BaseBackend):
    name = "anthropic"
    default_model: str | None = "claude-haiku-4-5"

    def __init__(self, concurrency: int) -> None:
        # Reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL from the server's environment.
        http_client = anthropic.DefaultAsyncHttpxClient(transport=ShardedTransport(concurrency))
        self._client = anthropic.AsyncAnthropic(max_retries=0, http_client=http_client)

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        message = await self._create(
            timeout_s, model=call.model, max_tokens=call.max_tokens, system=_system(call.system),
            messages=[{"role": "user", "content": call.prompt}],
        )  # fmt: skip
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(text, message.model, _input_tokens(message.usage), message.usage.output_tokens)

    async def chat(self, request: ChatRequest, timeout_s: float) -> ChatReply:
        tools = [{"name": t.name, "description": t.description, "input_schema": t.schema} for t in request.tools]
        message = await self._create(
            timeout_s, model=request.model, max_tokens=request.max_tokens, system=_system(request.system),
            messages=[_message(turn) for turn in request.turns], tools=tools,
        )  # fmt: skip
        text = "".join(block.text for block in message.content if block.type == "text")
        calls = tuple(
            ToolCall(block.id, block.name, dict(block.input) if isinstance(block.input, dict) else {})
            for block in message.content
            if block.type == "tool_use"
        )
        return ChatReply(text, calls, message.model, _input_tokens(message.usage), message.usage.output_tokens)

    async def _create(self, timeout_s: float, **arguments: object) -> anthropic.types.Message:
        try:
            return await self._client.messages.create(**arguments, timeout=timeout_s)  # type: ignore[call-overload,no-any-return]
        except anthropic.APITimeoutError:
            raise SubCallError(f"no answer within {timeout_s:g} s", kind="timeout", retryable=True) from None
        except anthropic.APIConnectionError as exc:
            raise SubCallError(f"cannot reach the Anthropic API: {exc}", kind="connection", retryable=True) from None
        except anthropic.APIStatusError as exc:
            raise status_error(exc.status_code, exc.message) from None

    async def aclose(self) -> None:
        await self._client.close()


def _system(system: str | None) -> object:
    if not system:
        return anthropic.NOT_GIVEN
    if len(system) >= CACHE_MIN_SYSTEM_CHARS:
        return [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}]
    return system


def _input_tokens(usage: anthropic.types.Usage) -> int:
    return usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)


def _message(turn: Turn) -> dict[str, object]:
    """A turn in the Messages format: tool results go back as a user message of tool_result blocks."""
    if turn.role == "tool":
        blocks = [
            {"type": "tool_result", "tool_use_id": r.call_id, "content": r.text, "is_error": r.is_error}
            for r in turn.results
        ]
        return {"role": "user", "content": blocks}
    if turn.role == "assistant":
        content: list[dict[str, object]] = [{"type": "text", "text": turn.text}] if turn.text else []
        content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in turn.calls]
        return {"role": "assistant", "content": content}
    return {"role": "user", "content": turn.text}
