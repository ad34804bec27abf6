"""Sub-call answers kept across sessions, so analysing the same data twice does not pay twice.

Keyed like the session's own cache (backend, model, system prompt, prompt, max_tokens: the prompt holds
the piece of content asked about) and by where the backend's calls go (its endpoint or CLI: one model name
at two endpoints, say a local server and a hosted API, is two models, and the workspace is shared by
servers configured differently), as a SHA-256, so the workspace holds answers but not the prompts that
asked for them. Entries older than --cache-days are not used; past --cache-max-mb the oldest go (checked
every PRUNE_EVERY writes, so the cap may be passed by that many answers in between). Answers of the client's
own model (sampling: whichever model the client picks) are not kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass

from rlm_mcp.config import Settings

PRUNE_EVERY = 64


@dataclass(frozen=True)
class StoredAnswer:
    text: str
    model: str
    input_tokens: int
    output_tokens: int


def key_of(backend: str, model: str, system: str | None, prompt: str, max_tokens: int, endpoint: str = "") -> str:
    parts = json.dumps(["answer/2", backend, endpoint, model, system, prompt, max_tokens], ensure_ascii=False)
    return hashlib.sha256(parts.encode("utf-8", "surrogatepass")).hexdigest()


def endpoint_of(backend: str, settings: Settings) -> str:
    """Where the named backend's calls go, as configured: its API's base URL, or its CLI."""
    if backend == "anthropic":  # the SDK reads the same variable
        return os.environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com"
    if backend == "openai":
        return settings.openai_base_url or ""
    if backend == "claude-code":
        return settings.claude_command
    if backend == "codex":
        return settings.codex_command
    return ""


def get(connection: sqlite3.Connection, key: str, max_age_s: float) -> StoredAnswer | None:
    row = connection.execute(
        "SELECT text, model, input_tokens, output_tokens FROM answers WHERE key = ? AND created >= ?",
        (key, time.time() - max_age_s),
    ).fetchone()
    if row is None:
        return None
    connection.execute("UPDATE answers SET hits = hits + 1 WHERE key = ?", (key,))
    return StoredAnswer(*row)


def put(connection: sqlite3.Connection, key: str, answer: StoredAnswer) -> None:
    size = len(answer.text.encode("utf-8", "surrogatepass")) + 200
    connection.execute(
        "INSERT OR REPLACE INTO answers (key, text, model, input_tokens, output_tokens, bytes, created) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        (key, answer.text, answer.model, answer.input_tokens, answer.output_tokens, size, time.time()),
    )


def prune(connection: sqlite3.Connection, max_bytes: int, max_age_s: float) -> int:
    """Drop expired answers, then the oldest until the rest fit `max_bytes`; returns how many went."""
    dropped = connection.execute("DELETE FROM answers WHERE created < ?", (time.time() - max_age_s,)).rowcount
    (total,) = connection.execute("SELECT COALESCE(SUM(bytes), 0) FROM answers").fetchone()
    if total > max_bytes:
        excess, cutoff = total - max_bytes, None
        for created, size in connection.execute("SELECT created, bytes FROM answers ORDER BY created"):
            excess -= size
            cutoff = created
            if excess <= 0:
                break
        dropped += connection.execute("DELETE FROM answers WHERE created <= ?", (cutoff,)).rowcount
    return dropped


def stats(connection: sqlite3.Connection) -> dict[str, int]:
    entries, size, hits = connection.execute(
        "SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(SUM(hits), 0) FROM answers"
    ).fetchone()
    return {"entries": entries, "bytes": size, "hits": hits}
