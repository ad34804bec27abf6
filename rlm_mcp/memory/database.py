"""The workspace's memory database: one SQLite file, opened lazily, used from worker threads.

SQLite because the three stores need indexed lookups, full-text ranking (FTS5's bm25) and safe use by
several server processes sharing a workspace (WAL and a busy timeout), and it ships with Python. Every
call is blocking: the async side runs `Database.run` in a thread (`Database.call`).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import anyio

from rlm_mcp import safefs
from rlm_mcp.errors import MemoryUnavailable

log = logging.getLogger(__name__)

FILENAME = "memory.sqlite3"
SCHEMA_VERSION = 2  # 2: behaviors and findings have a status (proposed until a person approves them)
BUSY_TIMEOUT_S = 5.0  # another server of the workspace holding the write lock: wait this long, then go without
Result = TypeVar("Result")

SCHEMA = """
CREATE TABLE IF NOT EXISTS behaviors (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    instruction TEXT NOT NULL,
    applies TEXT NOT NULL DEFAULT '',
    input_kind TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL,
    updated REAL NOT NULL,
    uses INTEGER NOT NULL DEFAULT 0,
    good_uses INTEGER NOT NULL DEFAULT 0,
    merged INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'proposed',
    session TEXT NOT NULL DEFAULT ''
);
CREATE VIRTUAL TABLE IF NOT EXISTS behaviors_fts USING fts5(
    name, instruction, applies, input_kind, content='behaviors', content_rowid='id', tokenize='unicode61'
);
CREATE TRIGGER IF NOT EXISTS behaviors_added AFTER INSERT ON behaviors BEGIN
    INSERT INTO behaviors_fts(rowid, name, instruction, applies, input_kind)
    VALUES (new.id, replace(new.name, '_', ' '), new.instruction, new.applies, new.input_kind);
END;
CREATE TRIGGER IF NOT EXISTS behaviors_removed AFTER DELETE ON behaviors BEGIN
    INSERT INTO behaviors_fts(behaviors_fts, rowid, name, instruction, applies, input_kind)
    VALUES ('delete', old.id, replace(old.name, '_', ' '), old.instruction, old.applies, old.input_kind);
END;
CREATE TRIGGER IF NOT EXISTS behaviors_changed AFTER UPDATE OF name, instruction, applies, input_kind ON behaviors
BEGIN
    INSERT INTO behaviors_fts(behaviors_fts, rowid, name, instruction, applies, input_kind)
    VALUES ('delete', old.id, replace(old.name, '_', ' '), old.instruction, old.applies, old.input_kind);
    INSERT INTO behaviors_fts(rowid, name, instruction, applies, input_kind)
    VALUES (new.id, replace(new.name, '_', ' '), new.instruction, new.applies, new.input_kind);
END;
CREATE TABLE IF NOT EXISTS behavior_sources (
    behavior_id INTEGER NOT NULL REFERENCES behaviors(id) ON DELETE CASCADE,
    session TEXT NOT NULL,
    cells TEXT NOT NULL DEFAULT '',
    input_kind TEXT NOT NULL DEFAULT '',
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS behavior_sources_by_behavior ON behavior_sources(behavior_id);
CREATE TABLE IF NOT EXISTS behavior_uses (
    session TEXT NOT NULL,
    behavior_id INTEGER NOT NULL REFERENCES behaviors(id) ON DELETE CASCADE,
    judged INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (session, behavior_id)
);
CREATE TABLE IF NOT EXISTS findings (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    kind TEXT NOT NULL,
    size INTEGER NOT NULL,
    text TEXT NOT NULL,
    session TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    origin TEXT NOT NULL,
    created REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'proposed',
    UNIQUE (digest, text)
);
CREATE INDEX IF NOT EXISTS findings_by_shape ON findings(kind, size);
CREATE TABLE IF NOT EXISTS file_digests (
    path TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS distilled (
    session TEXT PRIMARY KEY,
    through_event INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    created REAL NOT NULL,
    hits INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS answers_by_age ON answers(created);
"""
# Schema 1 had no approval: its behaviors and findings were shown as soon as a model wrote them. They get
# the status LEGACY, which nothing offers to a model (only APPROVED is), and `rlm-mcp handbook review`
# lists them, saying they were made before approval existed. A behavior's proposer is its first source.
MIGRATIONS = {
    "behaviors": (
        "ALTER TABLE behaviors ADD COLUMN status TEXT NOT NULL DEFAULT 'legacy'",
        "ALTER TABLE behaviors ADD COLUMN session TEXT NOT NULL DEFAULT ''",
        "UPDATE behaviors SET session = COALESCE((SELECT s.session FROM behavior_sources s "
        "WHERE s.behavior_id = behaviors.id ORDER BY s.at LIMIT 1), '')",
    ),
    "findings": ("ALTER TABLE findings ADD COLUMN status TEXT NOT NULL DEFAULT 'legacy'",),
}
INDEXES = (
    "CREATE INDEX IF NOT EXISTS findings_by_session ON findings(session)",
    "CREATE INDEX IF NOT EXISTS findings_by_status ON findings(status)",
    "CREATE INDEX IF NOT EXISTS behaviors_by_session ON behaviors(session)",
)


# What a person decided of a behavior or finding: only APPROVED ones are offered to a model.
PROPOSED, APPROVED, LEGACY = "proposed", "approved", "legacy"
# The tables a person decides entries of, and the column that names an entry to them.
DECIDED = {"behaviors": "name", "findings": "text"}


def decide_entry(connection: sqlite3.Connection, table: str, identifier: int, approve: bool) -> str | None:
    """Approve an entry (it is then offered to models) or reject it (it is deleted); returns its name or
    text, or None if there is no such entry."""
    column = DECIDED[table]  # one of two fixed names, never the caller's text
    row = connection.execute(f"SELECT {column} FROM {table} WHERE id = ?", (identifier,)).fetchone()
    if row is None:
        return None
    if approve:
        connection.execute(f"UPDATE {table} SET status = ? WHERE id = ?", (APPROVED, identifier))
    else:
        connection.execute(f"DELETE FROM {table} WHERE id = ?", (identifier,))
    return str(row[0])


def _migrate(connection: sqlite3.Connection) -> None:
    """Bring a schema-1 database's tables to this schema (inside the opening transaction)."""
    for table, statements in MIGRATIONS.items():
        columns = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}  # names from MIGRATIONS
        if "status" not in columns:
            for statement in statements:
                connection.execute(statement)


class Database:
    def __init__(self, workspace: Path) -> None:
        self.path = workspace / FILENAME
        self._connection: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _open(self) -> sqlite3.Connection:
        """Create the file 0600 first (SQLite would make it world-readable under a default umask, and its
        -wal and -shm files take the database's mode), refusing a link or a FIFO in its place."""
        try:
            safefs.private_dir(self.path.parent)
            try:
                os.close(safefs.create_exclusive(self.path, readable=False))
            except FileExistsError:
                if not stat.S_ISREG(os.lstat(self.path).st_mode):
                    raise MemoryUnavailable(f"{self.path} is not a regular file; move it away") from None
            connection = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False, isolation_level=None
            )
        except (OSError, sqlite3.Error) as exc:
            if isinstance(exc, MemoryUnavailable):
                raise
            raise MemoryUnavailable(f"cannot open {self.path}: {exc}") from None
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise MemoryUnavailable(
                    f"{self.path} was written by a newer rlm-mcp (schema {version}); upgrade, or move it away"
                )
            # One transaction: the script opens it (executescript would commit one already open), the
            # migration and the rest go on in it with execute().
            connection.executescript(f"BEGIN IMMEDIATE;{SCHEMA}")
            _migrate(connection)
            for statement in (*INDEXES, f"PRAGMA user_version={SCHEMA_VERSION}", "COMMIT"):
                connection.execute(statement)
        except sqlite3.Error as exc:
            connection.close()
            raise MemoryUnavailable(f"cannot use {self.path}: {exc}; move it away to start a new memory") from None
        except BaseException:
            connection.close()
            raise
        return connection

    def run(self, work: Callable[[sqlite3.Connection], Result]) -> Result:
        """Run `work` in one transaction (blocking): committed if it returns, rolled back if anything
        raises, the COMMIT itself included (a full disk), so no call leaves a transaction open behind it.
        One connection, one caller at a time; any database or file error is MemoryUnavailable."""
        with self._lock:
            if self._connection is None:
                self._connection = self._open()
            connection = self._connection
            try:
                connection.execute("BEGIN IMMEDIATE")
                result = work(connection)
                connection.execute("COMMIT")
                return result
            except BaseException as exc:
                if connection.in_transaction:
                    try:
                        connection.execute("ROLLBACK")
                    except sqlite3.Error:  # the connection is unusable: the next call opens a new one
                        connection.close()
                        self._connection = None
                if isinstance(exc, (sqlite3.Error, OSError)) and not isinstance(exc, MemoryUnavailable):
                    raise MemoryUnavailable(f"the memory database {self.path} failed: {exc}") from None
                raise

    def wipe(self) -> None:
        """Empty every table and give the space back, in place: servers that have the file open see an empty
        memory at once (removing the file would leave them their old copy)."""
        tables = ("behavior_uses", "behavior_sources", "behaviors", "findings", "file_digests", "distilled", "answers")

        def empty(connection: sqlite3.Connection) -> None:
            for table in tables:
                connection.execute(f"DELETE FROM {table}")  # names from the schema above, not from input

        self.run(empty)
        with self._lock:
            assert self._connection is not None
            try:
                self._connection.execute("VACUUM")
            except sqlite3.Error as exc:
                raise MemoryUnavailable(f"the memory was emptied but not compacted: {exc}") from None

    async def call(self, work: Callable[[sqlite3.Connection], Result]) -> Result:
        return await anyio.to_thread.run_sync(self.run, work)

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
