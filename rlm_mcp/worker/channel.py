"""The worker's side of the requests it sends the host: the protocol channel and the sub-call functions.

User code asks for sub-model calls (llm_query, llm_query_batched) and child RLMs (rlm_query,
rlm_query_batched); each is one request frame over the protocol pipe, and the host performs it: the worker
holds no API keys and opens no connections. Worker-side: the standard library and the bridge only
(tests/test_boundary.py).

RLMAnswer lived in worker/repl.py before; snapshots naming it there restore through worker/snapshot.py's
MOVED_CLASSES.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

from rlm_mcp.bridge import frames, ops
from rlm_mcp.worker.errors import LLMError, RLMError
from rlm_mcp.worker.mapped import MappedText


class HostChannel:
    """Requests from user code to the host (sub-calls), over the protocol pipe.

    The worker holds no API keys and opens no connections: the host performs every sub-call. One request
    is in flight at a time (a lock keeps threads from interleaving frames); llm_query_batched sends a whole
    batch as one request and the host runs it concurrently.
    """

    def __init__(self, proto_in: Any, proto_out: int) -> None:
        self._in = proto_in
        self._out = proto_out
        self._lock = threading.Lock()
        self._next = 0

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        for stream in (sys.stdout, sys.stderr):  # what the cell printed so far reaches the host's `running` answer
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        with self._lock:
            self._next += 1
            request_id = f"w{self._next}"
            frames.write_frame(self._out, {**message, "id": request_id})
            reply = frames.read_frame(self._in)
            if reply is None or reply.get("id") != request_id:
                raise SystemExit("rlm-mcp worker: the host broke the protocol")
            return reply


def _check_prompt(prompt: Any, what: str) -> str:
    if not isinstance(prompt, str):
        raise TypeError(f"{what} must be a str, not {type(prompt).__name__}; convert it with str() or slice a text")
    return prompt


def make_llm_functions(channel: HostChannel) -> dict[str, Any]:
    """The sub-call functions user code sees, with their error classes, all over one channel."""
    return {
        **_llm_functions(channel),
        "LLMError": LLMError,
        **_rlm_functions(channel),
        "RLMError": RLMError,
    }


def _llm_functions(channel: HostChannel) -> dict[str, Any]:
    """llm_query and llm_query_batched: plain sub-model calls, one request per batch."""

    def llm_query_batched(
        prompts: list[str],
        *,
        system: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        confirm: bool = False,
        behaviors: bool = False,
    ) -> list[str | LLMError]:
        """Ask a sub-model each prompt, concurrently. Results are in input order; a failed item is an
        LLMError instance (check with isinstance), so one failure does not lose the others. A batch that
        cannot start at all (no sub-model configured, the budget spent) raises LLMError once, and so does one
        that may cost more than the server's --confirm-batch-usd unless confirm=True. behaviors=True adds
        the handbook's relevant behaviors to the system prompt."""
        if isinstance(prompts, str):
            raise TypeError("llm_query_batched takes a list of prompts; for one prompt use llm_query")
        calls = [
            {"prompt": _check_prompt(p, f"prompts[{i}]"), "system": system, "model": model, "max_tokens": max_tokens}
            for i, p in enumerate(prompts)
        ]
        if not calls:
            return []
        reply = channel.request({"op": ops.LLM, "calls": calls, "confirm": bool(confirm), "behaviors": bool(behaviors)})
        if "results" not in reply:  # the batch could not start at all (no backend, budget spent): say it once
            raise LLMError(str(reply.get("error", "sub-calls failed")), str(reply.get("kind", "host")))
        return [
            item["text"]
            if item.get("ok")
            else LLMError(item.get("error", "sub-call failed"), item.get("kind", "error"))
            for item in reply["results"]
        ]

    def llm_query(
        prompt: str,
        *,
        system: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        behaviors: bool = False,
    ) -> str:
        """Ask a sub-model one prompt and return its answer; raises LLMError if the call fails."""
        (answer,) = llm_query_batched(
            [_check_prompt(prompt, "prompt")], system=system, model=model, max_tokens=max_tokens, behaviors=behaviors
        )
        if isinstance(answer, LLMError):
            raise answer
        return answer

    return {"llm_query": llm_query, "llm_query_batched": llm_query_batched}


def _rlm_functions(channel: HostChannel) -> dict[str, Any]:
    """rlm_query and rlm_query_batched: child RLMs, each with its own REPL, one request per batch."""

    def rlm_query_batched(
        prompts: list[str],
        contexts: list[Any] | None = None,
        *,
        model: str | None = None,
        max_iterations: int | None = None,
        timeout_s: float | None = None,
    ) -> list[RLMAnswer | RLMError]:
        """Run a child RLM per prompt, a few at a time: each gets its own REPL holding its context as
        `context` and a sub-model as its root, which runs code there and answers. Results are in input order;
        a failed item is an RLMError instance. At the server's depth cap each becomes a plain sub-call."""
        if isinstance(prompts, str):
            raise TypeError("rlm_query_batched takes a list of prompts; for one prompt use rlm_query")
        if contexts is not None and len(contexts) != len(prompts):
            raise ValueError(f"{len(prompts)} prompts but {len(contexts)} contexts: give one context per prompt")
        children = [
            {
                "prompt": _check_prompt(p, f"prompts[{i}]"),
                "context": _child_context(None if contexts is None else contexts[i], i),
                "model": model,
                "max_iterations": max_iterations,
                "timeout_s": timeout_s,
            }
            for i, p in enumerate(prompts)
        ]
        if not children:
            return []
        reply = channel.request({"op": ops.RLM, "children": children})
        if "results" not in reply:
            raise RLMError(str(reply.get("error", "child RLMs failed")), str(reply.get("kind", "host")))
        return [_child_answer(item) for item in reply["results"]]

    def rlm_query(
        prompt: str,
        context: Any = None,
        *,
        model: str | None = None,
        max_iterations: int | None = None,
        timeout_s: float | None = None,
    ) -> RLMAnswer:
        """Run one child RLM on `context` (a str, a loaded text, a dict or list) and return its answer, a str
        whose .partial is True if it stopped at a cap before answering; raises RLMError if it failed."""
        contexts = None if context is None else [context]
        (answer,) = rlm_query_batched(
            [_check_prompt(prompt, "prompt")], contexts, model=model, max_iterations=max_iterations, timeout_s=timeout_s
        )
        if isinstance(answer, RLMError):
            raise answer
        return answer

    return {"rlm_query": rlm_query, "rlm_query_batched": rlm_query_batched}


class RLMAnswer(str):
    """A child RLM's answer. `partial`: it stopped at a cap (`stopped` says which) and this is its best
    answer so far; `stopped` is also "answered", "answer variable" or "plain sub-call" (at the depth cap)."""

    partial: bool
    stopped: str
    iterations: int

    def __new__(cls, text: str, partial: bool = False, stopped: str = "answered", iterations: int = 0) -> RLMAnswer:
        answer = super().__new__(cls, text)
        answer.partial, answer.stopped, answer.iterations = partial, stopped, iterations
        return answer

    def __reduce__(self) -> Any:  # pickled with its attributes, for snapshots
        return (RLMAnswer, (str(self), self.partial, self.stopped, self.iterations))


def _child_context(value: Any, index: int) -> dict[str, Any] | None:
    """How a context travels to a child: a mapped file by its path (mapped again there, not copied), a str
    as text, a dict or list as JSON."""
    if value is None:
        return None
    if isinstance(value, MappedText):
        return {"kind": "path", "path": value.path}
    if isinstance(value, str):
        return {"kind": "text", "text": str(value)}
    if isinstance(value, (dict, list, tuple)):
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"contexts[{index}] holds a value that is not plain data ({exc}); give str, dict or list of str"
            ) from None
        return {"kind": "value", "value": value}
    raise TypeError(
        f"contexts[{index}] is a {type(value).__name__}; a child's context is a str, a loaded text, a dict or a "
        "list (convert with str())"
    )


def _child_answer(item: dict[str, Any]) -> RLMAnswer | RLMError:
    if not item.get("ok"):
        return RLMError(str(item.get("error", "child RLM failed")), str(item.get("kind", "error")))
    return RLMAnswer(
        str(item.get("text", "")),
        partial=bool(item.get("partial")),
        stopped=str(item.get("stopped", "answered")),
        iterations=int(item.get("iterations") or 0),
    )
