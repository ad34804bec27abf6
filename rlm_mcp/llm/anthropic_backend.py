"""Sub-calls to the Anthropic Messages API through the official SDK.

The SDK's own retries are off: the router retries with its own backoff and budget accounting, and two
layers of retries would multiply the wait and hide the attempts from the trace.
"""

from __future__ import annotations

import anthropic

from rlm_mcp.llm.http import ShardedTransport, status_error
from rlm_mcp.llm.types import Completion, SubCall, SubCallError

# Prompt caching pays from about 1,024 tokens of system prompt (the smallest cacheable prefix); below that
# the cache_control marker is ignored by the API, so it is only sent where it can help.
CACHE_MIN_SYSTEM_CHARS = 4_096


class AnthropicBackend:
    name = "anthropic"
    default_model: str | None = "claude-haiku-4-5"

    def __init__(self, concurrency: int) -> None:
        # Reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL from the server's environment.
        http_client = anthropic.DefaultAsyncHttpxClient(transport=ShardedTransport(concurrency))
        self._client = anthropic.AsyncAnthropic(max_retries=0, http_client=http_client)

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        system: object = anthropic.NOT_GIVEN
        if call.system:
            system = call.system
            if len(call.system) >= CACHE_MIN_SYSTEM_CHARS:
                system = [{"type": "text", "text": call.system, "cache_control": {"type": "ephemeral"}}]
        try:
            message = await self._client.messages.create(
                model=call.model,
                max_tokens=call.max_tokens,
                system=system,  # type: ignore[arg-type]
                messages=[{"role": "user", "content": call.prompt}],
                timeout=timeout_s,
            )
        except anthropic.APITimeoutError:
            raise SubCallError(f"no answer within {timeout_s:g} s", kind="timeout", retryable=True) from None
        except anthropic.APIConnectionError as exc:
            raise SubCallError(f"cannot reach the Anthropic API: {exc}", kind="connection", retryable=True) from None
        except anthropic.APIStatusError as exc:
            raise status_error(exc.status_code, exc.message) from None
        usage = message.usage
        input_tokens = (
            usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        )
        text = "".join(block.text for block in message.content if block.type == "text")
        return Completion(text, message.model, input_tokens, usage.output_tokens)

    async def aclose(self) -> None:
        await self._client.close()
