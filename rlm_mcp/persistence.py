"""Sessions on disk: what a session needs to come back after a server restart, signed so it is not forged.

A session's record (its loaded contexts, as the requests that load them, and the digests of its variables'
snapshot files) is kept in its directory as JSON with an HMAC-SHA256 made with a key that only the server
holds (`secret.key` in the workspace, mode 0600, outside every worker's sandbox). A record that fails the
check, or cannot be parsed, is refused with a warning and the session starts clean: the variables'
snapshot files are only ever unpickled inside the sandboxed worker, and only when their digests come from
a record that passed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

RECORD = "session.json"


class SessionStore:
    def __init__(self, workspace: Path) -> None:
        self.root = workspace / "sessions"
        self.root.mkdir(parents=True, exist_ok=True)
        self._key = self._load_key(workspace / "secret.key")

    @staticmethod
    def _load_key(path: Path) -> bytes:
        try:
            return bytes.fromhex(path.read_text().strip())
        except (OSError, ValueError):
            pass
        key = secrets.token_bytes(32)
        temporary = path.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key.hex())
        os.replace(temporary, path)
        return key

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self._key, payload, hashlib.sha256).hexdigest()

    def directory(self, session_id: str) -> Path:
        return self.root / session_id

    def save(self, session_id: str, record: dict[str, Any]) -> None:
        record = {**record, "id": session_id, "updated": time.time()}
        payload = json.dumps(record, sort_keys=True).encode()
        path = self.directory(session_id) / RECORD
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"record": record, "hmac": self._sign(payload)}))
        os.replace(temporary, path)

    def exists(self, session_id: str) -> bool:
        """Whether a record was saved for this id (authentic or not: `load` decides that, once)."""
        return (self.directory(session_id) / RECORD).is_file()

    def load(self, session_id: str) -> dict[str, Any] | None:
        """The session's record if it exists and is authentic; None (with a warning if it is not) otherwise."""
        path = self.directory(session_id) / RECORD
        try:
            stored = json.loads(path.read_text())
            record = stored["record"]
            payload = json.dumps(record, sort_keys=True).encode()
            authentic = hmac.compare_digest(self._sign(payload), str(stored["hmac"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("session %s: its saved record is corrupt (%s); starting it clean", session_id, exc)
            return None
        if not authentic or record.get("id") != session_id:
            log.warning("session %s: its saved record fails its signature check; refused, starting clean", session_id)
            return None
        return record

    def list(self) -> list[dict[str, Any]]:
        found = []
        for directory in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            record = self.load(directory.name)
            if record is not None:
                found.append(
                    {
                        "id": directory.name,
                        "updated": record.get("updated"),
                        "contexts": [context["name"] for context in record.get("contexts", [])],
                        "variables": len(record.get("snapshot", {})),
                    }
                )
        return found

    def delete(self, session_id: str) -> bool:
        directory = self.directory(session_id)
        if not directory.is_dir() or directory.parent != self.root:
            return False
        shutil.rmtree(directory, ignore_errors=True)
        return True
