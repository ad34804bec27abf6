"""Sub-calls to any OpenAI-compatible chat completions endpoint: Ollama, vLLM, LM Studio, OpenRouter."""

from __future__ import annotations

import httpx2

from rlm_mcp.llm.http import ShardedTransport, status_error
from rlm_mcp.llm.pricing import estimate_tokens
from rlm_mcp.llm.types import Completion, SubCall, SubCallError


class OpenAIBackend:
    name = "openai"
    default_model: str | None = "gpt-4o-mini"

    def __init__(self, base_url: str, api_key: str | None, concurrency: int) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._client = httpx2.AsyncClient(headers=headers, transport=ShardedTransport(concurrency))

    async def complete(self, call: SubCall, timeout_s: float) -> Completion:
        messages = [{"role": "system", "content": call.system}] if call.system else []
        messages.append({"role": "user", "content": call.prompt})
        body = {"model": call.model, "messages": messages, "max_tokens": call.max_tokens}
        try:
            response = await self._client.post(self._url, json=body, timeout=timeout_s)
        except httpx2.TimeoutException:
            raise SubCallError(f"no answer within {timeout_s:g} s", kind="timeout", retryable=True) from None
        except httpx2.HTTPError as exc:
            raise SubCallError(f"cannot reach {self._url}: {exc}", kind="connection", retryable=True) from None
        if response.status_code >= 400:
            raise status_error(response.status_code, _error_message(response))
        try:
            data = response.json()
            text = data["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise SubCallError(
                f"unexpected response from {self._url}: {response.text[:200]}", kind="provider"
            ) from None
        usage = data.get("usage") or {}
        if "prompt_tokens" in usage and "completion_tokens" in usage:
            return Completion(text, data.get("model", call.model), usage["prompt_tokens"], usage["completion_tokens"])
        return Completion(text, call.model, estimate_tokens(call.system, call.prompt), estimate_tokens(text))

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
