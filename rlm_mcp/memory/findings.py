"""Findings: facts a session established about one input ("timestamps are UTC; one request per line",
"the auth code is under src/auth"), filed under the input's content digest (memory/inputs.py) and shown
when the same content is loaded again, quoted, with the session they came from.

A model writes them after reading untrusted inputs, so a finding is a proposal (PROPOSED) until a person
approves it (`rlm-mcp handbook approve`; or the operator's --memory-auto-approve): only APPROVED ones are
ever offered to a model. Rows made before approval existed are LEGACY, proposals too.

Bounded, and no session can push out what others filed: a finding is one line of FINDING_LIMIT characters;
a session files at most MAX_PER_SESSION about one input and MAX_SESSION_FINDINGS in all (then it is
refused); an input keeps MAX_PER_INPUT and the workspace MAX_FINDINGS, and a full one makes room only from
the filing session's own oldest findings, or refuses.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from rlm_mcp.errors import FindingsFull
from rlm_mcp.memory.database import APPROVED, PROPOSED
from rlm_mcp.memory.inputs import InputRef
from rlm_mcp.memory.text import one_line

FINDING_LIMIT = 400
MAX_PER_INPUT = 50
MAX_PER_SESSION = 10  # of one input's: one session cannot push the others' findings out
MAX_SESSION_FINDINGS = 100  # of one session, about all inputs: one session cannot fill the workspace's
MAX_FINDINGS = 5_000
REVIEW = "a person decides with `rlm-mcp handbook review`"


@dataclass(frozen=True)
class Finding:
    text: str
    session: str
    origin: str  # "remember" (the session's code said it) or "distilled" (a sub-model read its trace)
    created: float
    source: str = ""


def add(
    connection: sqlite3.Connection,
    digest: str,
    ref: InputRef,
    text: str,
    session: str,
    origin: str,
    source: str,
    approved: bool = False,
) -> bool:
    """File a finding, a proposal unless `approved`; False if the input already has it word for word (or it
    is empty). Raises FindingsFull past a quota, or when a full store holds nothing of this session's."""
    line = one_line(text, FINDING_LIMIT)
    if not line:
        return False
    session = session[:80]
    if connection.execute("SELECT 1 FROM findings WHERE digest = ? AND text = ?", (digest, line)).fetchone():
        return False
    (about_input,) = connection.execute(
        "SELECT COUNT(*) FROM findings WHERE digest = ? AND session = ?", (digest, session)
    ).fetchone()
    if about_input >= MAX_PER_SESSION:
        raise FindingsFull(f"this session already filed {MAX_PER_SESSION} findings about this input, the most it may")
    (filed,) = connection.execute("SELECT COUNT(*) FROM findings WHERE session = ?", (session,)).fetchone()
    if filed >= MAX_SESSION_FINDINGS:
        raise FindingsFull(f"this session already filed {MAX_SESSION_FINDINGS} findings, the most one session may")
    status = APPROVED if approved else PROPOSED
    _make_room(connection, "digest = ?", (digest,), MAX_PER_INPUT, session, status, "this input has")
    _make_room(connection, "1 = 1", (), MAX_FINDINGS, session, status, "the workspace's memory holds")
    connection.execute(
        "INSERT INTO findings (digest, kind, size, text, session, source, origin, created, status) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (digest, ref.kind, ref.size, line, session, source[:500], origin, time.time(), status),
    )
    return True


def _make_room(
    connection: sqlite3.Connection,
    where: str,
    params: tuple[str, ...],
    cap: int,
    session: str,
    status: str,
    holder: str,
) -> None:
    """Below `cap` findings matching `where` (a condition of this module's, never input), room for one more
    of `status` is taken from `session`'s own oldest there (proposals first; an approved one only for an
    approved one); another session's are never dropped for it."""
    (count,) = connection.execute(f"SELECT COUNT(*) FROM findings WHERE {where}", params).fetchone()
    excess = count - cap + 1
    if excess <= 0:
        return
    own = connection.execute(
        f"SELECT id FROM findings WHERE {where} AND session = ? AND (status != ? OR ?) ORDER BY status = ?, id LIMIT ?",
        (*params, session, APPROVED, status == APPROVED, APPROVED, excess),
    ).fetchall()
    if len(own) < excess:
        raise FindingsFull(f"{holder} {cap:,} findings, the most it keeps, filed by other sessions; {REVIEW}")
    connection.executemany("DELETE FROM findings WHERE id = ?", own)


def may_have(connection: sqlite3.Connection, ref: InputRef) -> bool:
    """Whether any approved finding is filed for an input of this kind and size: only then is a digest worth
    its time."""
    row = connection.execute(
        "SELECT 1 FROM findings WHERE kind = ? AND size = ? AND status = ? LIMIT 1", (ref.kind, ref.size, APPROVED)
    )
    return row.fetchone() is not None


def of(connection: sqlite3.Connection, digest: str, kind: str, limit: int = MAX_PER_INPUT) -> list[Finding]:
    """The input's approved findings, oldest first (the order they were established in). Of its kind only: a
    text with a file's very bytes (a child RLM's context, say) does not share that file's findings."""
    rows = connection.execute(
        "SELECT text, session, origin, created, source FROM findings WHERE digest = ? AND kind = ? AND status = ? "
        "ORDER BY id DESC LIMIT ?",
        (digest, kind, APPROVED, limit),
    ).fetchall()
    return [Finding(*row) for row in reversed(rows)]


_LISTED = ("id", "digest", "kind", "size", "text", "session", "origin", "created", "source", "status")


def listed(connection: sqlite3.Connection, limit: int = 1_000, proposals: bool = False) -> list[dict[str, object]]:
    """The latest findings, newest first; with `proposals`, only those not approved yet (for review)."""
    where = "WHERE status != 'approved'" if proposals else ""
    rows = connection.execute(f"SELECT {', '.join(_LISTED)} FROM findings {where} ORDER BY id DESC LIMIT ?", (limit,))
    return [dict(zip(_LISTED, row, strict=True)) for row in rows.fetchall()]


def counts(connection: sqlite3.Connection) -> tuple[int, int]:
    """(findings in all, of them not approved yet)."""
    total, pending = connection.execute(
        "SELECT COUNT(*), COALESCE(SUM(status != 'approved'), 0) FROM findings"
    ).fetchone()
    return int(total), int(pending)
