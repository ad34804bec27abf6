"""Sessions on disk: what a session needs to come back after a server restart, signed so it is not forged.

A session's record (its loaded contexts, as the arguments that loaded them, and the digests of its
variables' snapshot files) is kept in its directory as JSON with an HMAC-SHA256 made with a key that only
the server holds (`secret.key` in the workspace: 32 random bytes, mode 0600, outside every worker's
sandbox). A record that fails the check, or cannot be parsed, is refused with a warning and the session
starts clean. Even an authentic record is only data: resuming replays context loads, each checked again
against today's roots, and the variables' snapshot files are only ever unpickled inside the sandboxed
worker, and only when their digests come from a record that passed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from rlm_mcp import safefs
from rlm_mcp.errors import SigningKeyError
from rlm_mcp.units import MiB

log = logging.getLogger(__name__)

RECORD = "session.json"
RECORD_MAX_BYTES = 128 * MiB  # inline contexts live in records: at most a few of the 1 M characters each
KEY_BYTES = 32
SESSION_ID = re.compile(r"(?:mcp-)?[A-Za-z0-9]{8,64}")


class SessionStore:
    def __init__(self, workspace: Path) -> None:
        self.root = safefs.private_dir(workspace / "sessions")
        self._key = self._load_key(workspace / "secret.key")

    @staticmethod
    def _load_key(path: Path) -> bytes:
        """32 random bytes, kept as hex. Made once; a key that is there but short, malformed or unreadable is
        an error: replacing it quietly would turn a tampered or damaged key into a working one."""
        advice = "fix or delete it (a new key is then made, and saved sessions start clean)"
        try:
            text = safefs.read_bounded(path, 4 * KEY_BYTES)
        except FileNotFoundError:
            key = secrets.token_bytes(KEY_BYTES)
            try:
                descriptor = safefs.create_exclusive(path, readable=False)
            except FileExistsError:  # another server made it first
                return SessionStore._load_key(path)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(key.hex())
            return key
        except OSError as exc:
            raise SigningKeyError(
                f"cannot read the session-signing key {path}: {exc.strerror or exc}; {advice}"
            ) from None
        try:
            key = bytes.fromhex(text.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise SigningKeyError(
                f"the session-signing key {path} is not {KEY_BYTES} bytes written as {2 * KEY_BYTES} hex digits; "
                + advice
            )
        return key

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def directory(self, session_id: str) -> Path:
        if not SESSION_ID.fullmatch(session_id):
            raise ValueError(f"not a session id: {session_id!r}")
        return self.root / session_id

    def save(self, session_id: str, record: dict[str, Any]) -> None:
        record = {**record, "id": session_id, "updated": time.time()}
        payload = json.dumps(record, sort_keys=True).encode()
        directory = safefs.private_dir(self.directory(session_id))
        safefs.write_atomic(directory / RECORD, json.dumps({"record": record, "hmac": self._sign(payload)}).encode())

    def exists(self, session_id: str) -> bool:
        """Whether a record was saved for this id (authentic or not: `load` decides that, once)."""
        try:
            return stat.S_ISREG(os.lstat(self.directory(session_id) / RECORD).st_mode)
        except (OSError, ValueError):
            return False

    def load(self, session_id: str) -> dict[str, Any] | None:
        """The session's record if it exists and is authentic; None (with a warning if it is not) otherwise."""
        try:
            stored = json.loads(safefs.read_bounded(self.directory(session_id) / RECORD, RECORD_MAX_BYTES))
            record = stored["record"]
            payload = json.dumps(record, sort_keys=True).encode()
            authentic = hmac.compare_digest(self._sign(payload), str(stored["hmac"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("session %s: its saved record is unusable (%s); starting it clean", session_id, exc)
            return None
        if not authentic or not isinstance(record, dict) or record.get("id") != session_id:
            log.warning("session %s: its saved record fails its signature check; refused, starting clean", session_id)
            return None
        return record

    def list(self) -> list[dict[str, Any]]:
        found = []
        for directory in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if not SESSION_ID.fullmatch(directory.name):
                continue
            record = self.load(directory.name)
            if record is not None:
                found.append(
                    {
                        "id": directory.name,
                        "updated": record.get("updated"),
                        "contexts": [str(context.get("name")) for context in _list(record.get("contexts"))],
                        "variables": len(record.get("snapshot") or {}),
                    }
                )
        return found

    def delete(self, session_id: str) -> bool:
        try:
            directory = self.directory(session_id)
            if not stat.S_ISDIR(os.lstat(directory).st_mode):
                return False
        except (OSError, ValueError):
            return False
        shutil.rmtree(directory, ignore_errors=True)  # never follows links (fd-based on Linux)
        return True


def _list(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []
