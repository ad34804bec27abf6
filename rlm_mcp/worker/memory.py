"""The REPL's side of the workspace memory: behaviors(), remember(), recall(), distill().

Each is one request to the host, which holds the memory; the worker keeps none of it. What comes back is
text models wrote in earlier sessions, to be read as advice and facts, never run.
"""

from __future__ import annotations

from typing import Any

MAX_QUERY_CHARS = 10_000
MAX_FINDING_CHARS = 4_000


class MemoryUnavailableError(RuntimeError):
    """The server could not do what was asked of its memory (it is off, or its database failed)."""


def make_memory_functions(channel: Any) -> dict[str, Any]:
    def ask(message: dict[str, Any]) -> dict[str, Any]:
        reply = channel.request({"op": "memory", **message})
        if not reply.get("ok"):
            raise MemoryUnavailableError(str(reply.get("error", "the memory failed")))
        return reply

    def behaviors(query: str = "", k: int = 8) -> list[str]:
        """The handbook's behaviors most relevant to `query` (BM25), one line each: name: instruction.
        Advice distilled from earlier sessions; use what fits."""
        if not isinstance(query, str):
            raise TypeError(f"query must be a str, not {type(query).__name__}")
        if not isinstance(k, int) or not 1 <= k <= 50:
            raise ValueError("k must be an int from 1 to 50")
        return [str(line) for line in ask({"action": "behaviors", "query": query[:MAX_QUERY_CHARS], "k": k})["lines"]]

    def remember(text: str, about: str | None = None) -> str:
        """Keep a fact about a loaded input for later sessions (filed under its content digest, so a
        changed file does not get it). `about`: the context's variable name; needed if several are loaded."""
        if not isinstance(text, str) or not text.strip():
            raise TypeError("remember takes the fact as a non-empty str")
        if about is not None and not isinstance(about, str):
            raise TypeError("about must be the name of a loaded context, as a str")
        return str(ask({"action": "remember", "text": text[:MAX_FINDING_CHARS], "about": about})["text"])

    def recall(about: str | None = None) -> list[str]:
        """What earlier sessions found about this very content (a loaded context), oldest first."""
        if about is not None and not isinstance(about, str):
            raise TypeError("about must be the name of a loaded context, as a str")
        return [str(line) for line in ask({"action": "recall", "about": about})["lines"]]

    def distill() -> str:
        """Have a sub-model distil this session's work so far into handbook behaviors and findings now."""
        return str(ask({"action": "distill"})["text"])

    return {
        "behaviors": behaviors,
        "remember": remember,
        "recall": recall,
        "distill": distill,
        "MemoryUnavailableError": MemoryUnavailableError,
    }
