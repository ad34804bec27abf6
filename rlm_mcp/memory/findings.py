"""Findings: facts a session established about one input ("timestamps are UTC; one request per line",
"the auth code is under src/auth"), filed under the input's content digest (memory/inputs.py) and shown
when the same content is loaded again, with the session they came from.

Bounded: a finding is one line of FINDING_LIMIT characters, an input keeps its latest MAX_PER_INPUT, the
workspace its latest MAX_FINDINGS.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from rlm_mcp.memory.inputs import InputRef
from rlm_mcp.memory.text import one_line

FINDING_LIMIT = 400
MAX_PER_INPUT = 50
MAX_PER_SESSION = 10  # of one input's: one session cannot push the others' findings out
MAX_FINDINGS = 5_000


class FindingsFull(ValueError):
    """A session filed as many findings about one input as it may."""


@dataclass(frozen=True)
class Finding:
    text: str
    session: str
    origin: str  # "remember" (the session's code said it) or "distilled" (a sub-model read its trace)
    created: float
    source: str = ""


def add(
    connection: sqlite3.Connection, digest: str, ref: InputRef, text: str, session: str, origin: str, source: str
) -> bool:
    """File a finding; False if the input already has it word for word (or it is empty)."""
    line = one_line(text, FINDING_LIMIT)
    if not line:
        return False
    (filed,) = connection.execute(
        "SELECT COUNT(*) FROM findings WHERE digest = ? AND session = ?", (digest, session)
    ).fetchone()
    if filed >= MAX_PER_SESSION:
        raise FindingsFull(f"this session already filed {MAX_PER_SESSION} findings about this input, the most it may")
    cursor = connection.execute(
        "INSERT OR IGNORE INTO findings (digest, kind, size, text, session, source, origin, created) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (digest, ref.kind, ref.size, line, session[:80], source[:500], origin, time.time()),
    )
    if not cursor.rowcount:
        return False
    connection.execute(
        "DELETE FROM findings WHERE digest = ? AND id NOT IN "
        "(SELECT id FROM findings WHERE digest = ? ORDER BY id DESC LIMIT ?)",
        (digest, digest, MAX_PER_INPUT),
    )
    connection.execute(
        "DELETE FROM findings WHERE id NOT IN (SELECT id FROM findings ORDER BY id DESC LIMIT ?)", (MAX_FINDINGS,)
    )
    return True


def may_have(connection: sqlite3.Connection, ref: InputRef) -> bool:
    """Whether any finding is filed for an input of this kind and size: only then is a digest worth its time."""
    row = connection.execute("SELECT 1 FROM findings WHERE kind = ? AND size = ? LIMIT 1", (ref.kind, ref.size))
    return row.fetchone() is not None


def of(connection: sqlite3.Connection, digest: str, kind: str, limit: int = MAX_PER_INPUT) -> list[Finding]:
    """The input's findings, oldest first (the order they were established in). Of its kind only: a text
    with a file's very bytes (a child RLM's context, say) does not share that file's findings."""
    rows = connection.execute(
        "SELECT text, session, origin, created, source FROM findings WHERE digest = ? AND kind = ? "
        "ORDER BY id DESC LIMIT ?",
        (digest, kind, limit),
    ).fetchall()
    return [Finding(*row) for row in reversed(rows)]


def listed(connection: sqlite3.Connection, limit: int = 1_000) -> list[dict[str, object]]:
    rows = connection.execute(
        "SELECT digest, kind, size, text, session, origin, created, source FROM findings ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    keys = ("digest", "kind", "size", "text", "session", "origin", "created", "source")
    return [dict(zip(keys, row, strict=True)) for row in rows]
