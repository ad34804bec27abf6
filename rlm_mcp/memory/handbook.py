"""The behavior handbook: procedural memory, after "Metacognitive Reuse" (arXiv 2509.13237).

A behavior is a canonical name and a one-line instruction ("behavior_grep_before_chunking: count matches
with grep(..., count=True) before reading a log in chunks"), with when it applies, the kind of input it
came from, where it came from (session, cells) and how it fared: `uses` counts the sessions it was shown
in, `good_uses` those of them that ended well by their distillation's verdict. Near-duplicates merge into
the behavior already there instead of piling up.

A distilled or imported behavior is a proposal until a person approves it (`rlm-mcp handbook approve`, or
the operator's --memory-auto-approve): only approved ones are searched for a model (load results, the
REPL's behaviors(), behavior-conditioned system prompts), and a proposal merged into an approved behavior
changes none of its words. A session proposes at most MAX_SESSION_BEHAVIORS; past MAX_BEHAVIORS a new one
takes room only from its own session's least proven, never from another session's.

Functions take an open connection and run inside Database.run (one transaction each).
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rlm_mcp.errors import HandbookError
from rlm_mcp.memory.database import APPROVED, PROPOSED
from rlm_mcp.memory.text import fts_query, one_line, similarity

MAX_BEHAVIORS = 500
NAME_LIMIT = 64
INSTRUCTION_LIMIT = 300
APPLIES_LIMIT = 200
KIND_LIMIT = 100
MERGE_SIMILARITY = 0.5  # Jaccard similarity of name and instruction words at which two behaviors are one
MAX_SOURCES = 20  # provenance kept per behavior: the latest sessions it was distilled from
NAME_PREFIX = "behavior_"
_NOT_NAME = re.compile(r"[^a-z0-9]+")
BM25_WEIGHTS = (2.0, 1.0, 1.0, 1.5)  # name, instruction, applies, input_kind
MAX_USE_ROWS = 20_000  # which session was shown which behavior: the latest are enough to count each once
MAX_SESSION_BEHAVIORS = 25  # proposed by one session (an import, a person's act, has no quota)


@dataclass
class Behavior:
    name: str
    instruction: str
    applies: str = ""
    input_kind: str = ""
    uses: int = 0
    good_uses: int = 0
    merged: int = 0
    created: float = 0.0
    updated: float = 0.0
    id: int | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)
    status: str = PROPOSED
    session: str = ""  # the session that first proposed it

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("id")
        return data


def canonical_name(name: str) -> str:
    """`behavior_` and lower-case words joined by `_`: a name is an identifier, never free text."""
    words = _NOT_NAME.sub("_", name.lower()).strip("_")
    if words == NAME_PREFIX.rstrip("_") or words.startswith(NAME_PREFIX):
        words = words[len(NAME_PREFIX) :]
    if not words:
        raise HandbookError(f"a behavior needs a name of letters and digits, not {name!r}")
    return (NAME_PREFIX + words)[:NAME_LIMIT].rstrip("_")


def proposed(name: str, instruction: str, applies: str = "", input_kind: str = "") -> Behavior:
    """A behavior as stored: a canonical name and bounded one-line texts."""
    text = one_line(instruction, INSTRUCTION_LIMIT)
    if not text:
        raise HandbookError("a behavior needs an instruction: one line saying what to do")
    return Behavior(canonical_name(name), text, one_line(applies, APPLIES_LIMIT), one_line(input_kind, KIND_LIMIT))


def proposed_from(item: Any, applies_key: str = "applies") -> Behavior:
    """A behavior from untrusted JSON (a distiller's answer, an imported file): an object of text fields."""
    if not isinstance(item, dict):
        raise HandbookError("a behavior must be an object")
    texts = [item.get(key, "") for key in ("name", "instruction", applies_key, "input_kind")]
    if not all(isinstance(text, str) for text in texts):
        raise HandbookError("a behavior's name, instruction, when it applies and input kind must be text")
    return proposed(*texts)


_COLUMNS = "id, name, instruction, applies, input_kind, uses, good_uses, merged, created, updated, status, session"


def _behavior(row: sqlite3.Row | tuple[Any, ...]) -> Behavior:
    identifier, name, instruction, applies, kind, uses, good, merged, created, updated, status, session = row
    numbers = (uses, good, merged, created, updated, identifier)
    return Behavior(name, instruction, applies, kind, *numbers, status=status, session=session)


def add(
    connection: sqlite3.Connection,
    behavior: Behavior,
    session: str,
    cells: str = "",
    now: float | None = None,
    approved: bool = False,
    quota: int | None = MAX_SESSION_BEHAVIORS,
) -> tuple[str, Behavior]:
    """Store a behavior, a proposal unless `approved`, or merge it into the one it duplicates (same name, or
    most of the same words). Returns ("added", "merged" or "refused", the behavior): refused when `session`
    has proposed `quota` behaviors already, or the handbook is full of other sessions' behaviors."""
    now = time.time() if now is None else now
    session = session[:80]
    twin = _twin(connection, behavior)
    if twin is not None:
        # A proposal's words never reach an approved behavior; an approved merge approves its twin.
        fill = approved or twin.status != APPROVED
        connection.execute(
            "UPDATE behaviors SET merged = merged + 1, updated = ?, applies = CASE WHEN applies = '' AND ? THEN ? "
            "ELSE applies END, status = CASE WHEN ? THEN ? ELSE status END WHERE id = ?",
            (now, fill, behavior.applies, approved, APPROVED, twin.id),
        )
        _add_source(connection, twin.id, session, cells, behavior.input_kind, now)
        return "merged", get(connection, twin.name)
    if quota is not None:
        (before,) = connection.execute("SELECT COUNT(*) FROM behaviors WHERE session = ?", (session,)).fetchone()
        if before >= quota:
            return "refused", behavior
    if not _make_room(connection, session, approved):
        return "refused", behavior
    cursor = connection.execute(
        "INSERT INTO behaviors (name, instruction, applies, input_kind, created, updated, status, session) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (behavior.name, behavior.instruction, behavior.applies, behavior.input_kind, now, now,
         APPROVED if approved else PROPOSED, session),
    )  # fmt: skip
    _add_source(connection, cursor.lastrowid, session, cells, behavior.input_kind, now)
    return "added", get(connection, behavior.name)


def _twin(connection: sqlite3.Connection, behavior: Behavior) -> Behavior | None:
    same = connection.execute(f"SELECT {_COLUMNS} FROM behaviors WHERE name = ?", (behavior.name,)).fetchone()
    if same is not None:
        return _behavior(same)
    words = f"{behavior.name.replace('_', ' ')} {behavior.instruction}"
    best, best_score = None, MERGE_SIMILARITY
    for candidate in search(connection, words, 8, approved_only=False):
        score = similarity(words, f"{candidate.name.replace('_', ' ')} {candidate.instruction}")
        if score >= best_score:
            best, best_score = candidate, score
    return best


def _add_source(
    connection: sqlite3.Connection, behavior_id: int | None, session: str, cells: str, kind: str, now: float
) -> None:
    connection.execute(
        "INSERT INTO behavior_sources (behavior_id, session, cells, input_kind, at) VALUES (?, ?, ?, ?, ?)",
        (behavior_id, session[:80], cells[:200], kind, now),
    )
    connection.execute(
        "DELETE FROM behavior_sources WHERE behavior_id = ? AND rowid NOT IN (SELECT rowid FROM behavior_sources "
        "WHERE behavior_id = ? ORDER BY at DESC LIMIT ?)",
        (behavior_id, behavior_id, MAX_SOURCES),
    )


def _make_room(connection: sqlite3.Connection, session: str, approved: bool) -> bool:
    """Room for one more below the cap, taken from `session`'s own behaviors that did least (proposals first,
    then fewest good uses, fewest uses, oldest; an approved one only for an approved one); False if it has
    too few: another session's never go."""
    (count,) = connection.execute("SELECT COUNT(*) FROM behaviors").fetchone()
    excess = count - MAX_BEHAVIORS + 1
    if excess <= 0:
        return True
    own = connection.execute(
        "SELECT id FROM behaviors WHERE session = ? AND (status != ? OR ?) "
        "ORDER BY status = ?, good_uses, uses, updated LIMIT ?",
        (session, APPROVED, approved, APPROVED, excess),
    ).fetchall()
    if len(own) < excess:
        return False
    connection.executemany("DELETE FROM behaviors WHERE id = ?", own)
    return True


def search(connection: sqlite3.Connection, query: str, k: int, approved_only: bool = True) -> list[Behavior]:
    """The `k` approved behaviors most relevant to `query` by BM25 over name, instruction, when it applies
    and input kind; with a query of no words, the most proven ones. `approved_only=False` (proposals too) is
    for finding a duplicate, never for showing a model."""
    status = f"AND b.status = '{APPROVED}'" if approved_only else ""
    columns = ", ".join(f"b.{column.strip()}" for column in _COLUMNS.split(","))
    match = fts_query(query)
    if match is None:
        rows = connection.execute(
            f"SELECT {columns} FROM behaviors b WHERE 1 = 1 {status} "
            "ORDER BY b.good_uses DESC, b.uses DESC, b.updated DESC LIMIT ?",
            (k,),
        ).fetchall()
        return [_behavior(row) for row in rows]
    rows = connection.execute(
        f"SELECT {columns} FROM behaviors_fts JOIN behaviors b ON b.id = behaviors_fts.rowid "
        f"WHERE behaviors_fts MATCH ? {status} ORDER BY bm25(behaviors_fts, {', '.join(map(str, BM25_WEIGHTS))}), "
        "b.good_uses DESC LIMIT ?",
        (match, k),
    ).fetchall()
    return [_behavior(row) for row in rows]


def note_uses(connection: sqlite3.Connection, session: str, behaviors: list[Behavior]) -> None:
    """Count each behavior once per session it is shown in."""
    for behavior in behaviors:
        cursor = connection.execute(
            "INSERT OR IGNORE INTO behavior_uses (session, behavior_id) VALUES (?, ?)", (session, behavior.id)
        )
        if cursor.rowcount:
            connection.execute("UPDATE behaviors SET uses = uses + 1 WHERE id = ?", (behavior.id,))
    connection.execute(
        "DELETE FROM behavior_uses WHERE rowid <= (SELECT MAX(rowid) FROM behavior_uses) - ?", (MAX_USE_ROWS,)
    )


def judge(connection: sqlite3.Connection, session: str, ended_well: bool) -> int:
    """Credit the behaviors a session used with its outcome, once; returns how many were credited."""
    rows = connection.execute(
        "SELECT behavior_id FROM behavior_uses WHERE session = ? AND judged = 0", (session,)
    ).fetchall()
    ids = [row[0] for row in rows]
    if ended_well:
        connection.executemany("UPDATE behaviors SET good_uses = good_uses + 1 WHERE id = ?", [(i,) for i in ids])
    connection.execute("UPDATE behavior_uses SET judged = 1 WHERE session = ?", (session,))
    return len(ids) if ended_well else 0


def get(connection: sqlite3.Connection, name: str, with_sources: bool = False) -> Behavior:
    row = connection.execute(f"SELECT {_COLUMNS} FROM behaviors WHERE name = ?", (canonical_name(name),)).fetchone()
    if row is None:
        raise HandbookError(f"no behavior {name!r} in the handbook (`rlm-mcp handbook list` shows them)")
    behavior = _behavior(row)
    if with_sources:
        sources = connection.execute(
            "SELECT session, cells, input_kind, at FROM behavior_sources WHERE behavior_id = ? ORDER BY at",
            (behavior.id,),
        ).fetchall()
        keys = ("session", "cells", "input_kind", "at")
        behavior.sources = [dict(zip(keys, source, strict=True)) for source in sources]
    return behavior


def all_behaviors(
    connection: sqlite3.Connection, with_sources: bool = False, status: str | None = None
) -> list[Behavior]:
    """Every behavior (or those of one status), the most proven first."""
    where, params = ("WHERE status = ?", (status,)) if status is not None else ("", ())
    names = connection.execute(
        f"SELECT name FROM behaviors {where} ORDER BY good_uses DESC, uses DESC, name", params
    ).fetchall()
    return [get(connection, name, with_sources) for (name,) in names]


def proposals(connection: sqlite3.Connection) -> list[Behavior]:
    """The behaviors not approved yet, oldest first, with their sources (for review)."""
    names = connection.execute("SELECT name FROM behaviors WHERE status != ? ORDER BY id", (APPROVED,)).fetchall()
    return [get(connection, name, with_sources=True) for (name,) in names]


def edit(connection: sqlite3.Connection, name: str, **changes: str) -> Behavior:
    """Change a behavior's instruction, when it applies or its input kind (the user's words, kept as given)."""
    current = get(connection, name)
    limits = {"instruction": INSTRUCTION_LIMIT, "applies": APPLIES_LIMIT, "input_kind": KIND_LIMIT}
    values = {column: one_line(text, limits[column]) for column, text in changes.items() if text is not None}
    if "instruction" in values and not values["instruction"]:
        raise HandbookError("the instruction cannot be empty; `rlm-mcp handbook delete NAME` removes a behavior")
    if values:
        assignments = ", ".join(f"{column} = ?" for column in values)
        connection.execute(
            f"UPDATE behaviors SET {assignments}, updated = ? WHERE id = ?", (*values.values(), time.time(), current.id)
        )
    return get(connection, name)


def delete(connection: sqlite3.Connection, name: str) -> None:
    behavior = get(connection, name)
    connection.execute("DELETE FROM behaviors WHERE id = ?", (behavior.id,))


def counts(connection: sqlite3.Connection) -> int:
    return int(connection.execute("SELECT COUNT(*) FROM behaviors").fetchone()[0])


def pending(connection: sqlite3.Connection) -> int:
    """How many behaviors wait for a person's approval."""
    return int(connection.execute("SELECT COUNT(*) FROM behaviors WHERE status != ?", (APPROVED,)).fetchone()[0])
