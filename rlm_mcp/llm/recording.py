"""What a trace records of a model call so that `rlm-mcp replay` can answer the same call again.

A sub-call is known by the digest of what was asked (system, prompt, max_tokens), not of the backend or the
model: the model a trace names is the one the provider says answered, and the default model depends on
the backend, so neither would be the same in a replay that has no provider. A root model's turn (a child
RLM's, or `ask`'s) is recorded with the digest of what stays the same in a replay: the conversation without
the times its tool results report ("[ok, state kept, 0.012 s]"), and the system prompt without what the
memory offered. Both sides (the router
recording, the replay answering) compute them here, so they cannot drift apart. Two children whose first
requests are the same (one question, like contexts) may get each other's recorded turns, since nothing tells
them apart until their tool results do.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from rlm_mcp.llm.types import ChatReply, ChatRequest, SubCall, ToolCall
from rlm_mcp.memory.text import MEMORY_HEADING
from rlm_mcp.trace import REPLAY_LIMIT

DURATION = re.compile(r"\b\d+(?:\.\d+)?\s?(?:ms|s|min)\b")  # what differs between two runs of the same turn


def _digest(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def sub_call_sha256(call: SubCall) -> str:
    return _digest([call.system, call.prompt, call.max_tokens])


def _call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments}


def _timeless(text: str) -> str:
    return DURATION.sub("<time>", text)


def turn_sha256(request: ChatRequest) -> str:
    """The request as it is again in a replay of the same session: the conversation so far, with the times
    its tool results report ("0.012 s") left out, the system prompt without what the memory offered (a
    replay runs without the memory), the tools and max_tokens. So a child whose data or code changed asks
    something new from its second turn on."""
    system = (request.system or "").split(MEMORY_HEADING, 1)[0]
    turns = [
        {
            "role": turn.role,
            "text": _timeless(turn.text),
            "calls": [[call.name, call.arguments] for call in turn.calls],
            "results": [[_timeless(result.text), result.is_error] for result in turn.results],
        }
        for turn in request.turns
    ]
    return _digest([system, turns, [tool.name for tool in request.tools], request.max_tokens])


def reply_record(reply: ChatReply) -> dict[str, Any] | None:
    """The reply as replay needs it back, or None if its JSON is longer than a trace keeps a text."""
    record = {"text": reply.text, "calls": [_call(call) for call in reply.calls]}
    size = len(json.dumps(record, ensure_ascii=False, default=str))
    return record if size <= REPLAY_LIMIT else None


def reply_calls(record: Any) -> tuple[ToolCall, ...] | None:
    """The tool calls of a recorded reply, or None if the record is not one `reply_record` could write."""
    if not isinstance(record, dict) or not isinstance(record.get("text"), str):
        return None
    if not isinstance(record.get("calls"), list):
        return None
    calls = []
    for call in record["calls"]:
        if not isinstance(call, dict):
            return None
        call_id, name, arguments = call.get("id"), call.get("name"), call.get("arguments")
        if not (isinstance(call_id, str) and isinstance(name, str) and isinstance(arguments, dict)):
            return None
        calls.append(ToolCall(call_id, name, arguments))
    return tuple(calls)
