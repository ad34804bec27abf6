"""The REPL's side of the workspace memory: behaviors(), remember(), recall(), distill().

Each is one request to the host, which holds the memory; the worker keeps none of it. What comes back is
text models wrote in earlier sessions, to be read as advice and facts, never run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlm_mcp.bridge import ops
from rlm_mcp.worker.errors import MemoryUnavailableError

MAX_QUERY_CHARS = 10_000
MAX_FINDING_CHARS = 4_000


def _context_name(about: Any, loaded: dict[str, Any]) -> str | None:
    """The name of the context `about` means: its name, or the context's value itself where exactly one
    loaded context is that very object (code often passes `log` for 'log'); else a ValueError that says how."""
    if about is None or (isinstance(about, str) and about in loaded):
        return about
    same = [name for name, value in loaded.items() if value is about]
    if len(same) == 1:
        return same[0]
    if isinstance(about, str) and about.isidentifier():
        return about  # a name; the server says whether such a context is loaded
    example = same[0] if same else next(iter(loaded), "log")
    raise ValueError(f"about= takes the context's name, e.g. about={example!r}")


def make_memory_functions(channel: Any, contexts: Callable[[], dict[str, Any]] = dict) -> dict[str, Any]:
    """`contexts`: the loaded contexts now, name -> value (so `about=` may be given the value itself)."""

    def ask(message: dict[str, Any]) -> dict[str, Any]:
        reply = channel.request({"op": ops.MEMORY, **message})
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
        changed file does not get it). `about`: the context's name (or the context itself); needed if several
        are loaded."""
        if not isinstance(text, str) or not text.strip():
            raise TypeError("remember takes the fact as a non-empty str")
        name = _context_name(about, contexts())
        return str(ask({"action": "remember", "text": text[:MAX_FINDING_CHARS], "about": name})["text"])

    def recall(about: str | None = None) -> list[str]:
        """What earlier sessions found about this very content (a loaded context), oldest first; then this
        session's own findings that await a person's approval, marked so."""
        return [str(line) for line in ask({"action": "recall", "about": _context_name(about, contexts())})["lines"]]

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
