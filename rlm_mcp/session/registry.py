"""All live sessions of a server process, and which one a call belongs to."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import shutil
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from rlm_mcp import safefs, telemetry
from rlm_mcp.config import Settings
from rlm_mcp.errors import UserError
from rlm_mcp.llm.router import Router
from rlm_mcp.llm.types import Backend
from rlm_mcp.memory.service import Memory
from rlm_mcp.session.running import Spawn
from rlm_mcp.session.services import Services
from rlm_mcp.session.session import Session
from rlm_mcp.session.store import SESSION_ID, SessionStore

log = logging.getLogger(__name__)

LAST_STDIO_SESSION = "last-stdio-session"
HANDLE = SESSION_ID
UNUSED_SESSION_S = 45.0  # a session that no call has used is closed after this long
NEW_SESSION_WINDOW_S = 60.0
PREPARE_AFTER_S = 1.0  # a host lists the tools within this; its model's first tool call comes later


@dataclass
class Resolved:
    """The session a call belongs to. `minted`: its handle was made for this call (the client must be told
    it); `created`: the session was made for this call, so it goes again if the call is refused."""

    session: Session
    minted: bool = False
    created: bool = False


class SessionRegistry:
    """All live sessions of this server process; stdio uses one default session.

    With `resume` set, the default session is the one the previous stdio server used, brought back from
    the store (its contexts reloaded, its variables restored) on the first call that needs the worker.
    Over HTTP a session costs a slot, a directory and later a worker, so a refused call leaves none behind
    (`discard`), one never used is closed within a minute, and one client address may only start so many
    sessions a minute.
    """

    def __init__(self, settings: Settings, services: Services | None = None, backend: Backend | None = None) -> None:
        """`services` serves what the sessions' workers ask the server (see rlm_mcp/engine/assembly.py);
        `backend`, if given, answers every model call (see Router)."""
        self.settings = settings
        self.services = services
        self.memory = Memory(settings)
        self.router = Router(settings, self.memory, backend)
        self.store = SessionStore(settings.workspace)
        self._sessions: dict[str, Session] = {}
        self._started_by: dict[str, deque[float]] = defaultdict(deque)  # client address -> session start times
        self._default_id = self._pick_default_id()
        self.spawn: Spawn | None = None  # the server's task group's start_soon, set while the server runs

    def _spawn(self, task: Callable[[], Awaitable[None]]) -> None:
        if self.spawn is None:
            raise RuntimeError("the server is not running (no task group for cells)")
        self.spawn(task)

    def _pick_default_id(self) -> str:
        pointer = self.settings.workspace / LAST_STDIO_SESSION
        if self.settings.resume:
            try:
                previous = safefs.read_bounded(pointer, 256).decode("ascii", "replace").strip()
            except OSError:
                previous = ""
            if HANDLE.fullmatch(previous):
                return previous
        session_id = secrets.token_hex(8)
        safefs.write_atomic(pointer, session_id.encode())
        return session_id

    def default(self) -> Session:
        return self.get(self._default_id)

    async def prepare_stdio(self) -> None:
        """Ready what stdio's first calls need while the host's model takes its first turns: the sub-call
        backend and the one session's worker (a session resumed with --resume is reloaded then too). Begun
        PREPARE_AFTER_S after start, so that it does not slow the handshake and the first tools/list."""
        await anyio.sleep(PREPARE_AFTER_S)
        async with anyio.create_task_group() as group:
            group.start_soon(self.router.prepare)
            group.start_soon(self.default().prepare)

    def resolve(
        self,
        handle: str | None,
        transport_session: str | None,
        client: str | None = None,
        named: tuple[str, str] | None = None,
    ) -> Resolved:
        """The session a call belongs to.

        stdio: the default session. HTTP: the MCP session of a pre-2026 client (its mcp-session-id), or the
        handle a sessionless client passes back, or the session a client names in a header of its config
        (`named`: its credentials and the name), so that a host that keeps no MCP session and drops the
        handle still keeps its state; a call with none of these gets a new session and its handle.
        A handle also reaches a saved session on any transport (resuming it). `client`: the caller's address,
        for the cap on new sessions.
        """
        if handle is not None:
            if not HANDLE.fullmatch(handle) or (handle not in self._sessions and not self.store.exists(handle)):
                raise UserError(f"no session {handle!r}: omit `session` to start one, or pass a handle you were given")
            return Resolved(self._touch(self.get(handle)))
        if self.settings.transport == "stdio":
            return Resolved(self._touch(self.default()))
        if named is not None:
            owner, name = named  # one client's names never reach another's sessions
            session_id = "named" + hashlib.sha256(f"{owner}\0{name}".encode()).hexdigest()[:40]
            if session_id in self._sessions or self.store.exists(session_id):
                return Resolved(self._touch(self.get(session_id)))
            return Resolved(self._new(session_id, client), created=True)
        if transport_session is not None:
            session_id = "mcp-" + re.sub(r"[^A-Za-z0-9]", "", transport_session)[:64]
            if session_id in self._sessions:
                return Resolved(self._touch(self._sessions[session_id]))
            return Resolved(self._new(session_id, client), created=True)
        return Resolved(self._new(secrets.token_hex(16), client), minted=True, created=True)

    def _new(self, session_id: str, client: str | None) -> Session:
        """A session for a client that has none yet, within that client's quota of new sessions."""
        if client is not None:
            started = self._started_by[client]
            now = time.monotonic()
            while started and started[0] < now - NEW_SESSION_WINDOW_S:
                started.popleft()
            cap = self.settings.max_new_sessions_per_minute
            if len(started) >= cap:
                raise UserError(
                    f"this client started {cap} sessions in the last minute, the most allowed "
                    "(--max-new-sessions-per-minute); pass the `session` handle you were given to reuse one"
                )
            started.append(now)
        return self._touch(self.get(session_id))

    async def discard(self, resolved: Resolved) -> None:
        """Undo a session made for a call that was refused: no slot, no directory, no worker left behind."""
        session = resolved.session
        if not resolved.created or session.calls or session.busy or self._sessions.get(session.id) is not session:
            return
        del self._sessions[session.id]
        await session.close()
        if not self.store.exists(session.id):
            shutil.rmtree(session.dir, ignore_errors=True)

    def _touch(self, session: Session) -> Session:
        session.last_used = time.monotonic()
        return session

    async def evict_idle(self) -> list[str]:
        """Close sessions unused for idle_timeout_s, and within a minute those no call has used; records
        stay, so a later call with the handle resumes them."""
        now = time.monotonic()

        def expired(session: Session) -> bool:
            unused_for = now - session.last_used
            limit = (
                self.settings.idle_timeout_s if session.calls else min(UNUSED_SESSION_S, self.settings.idle_timeout_s)
            )
            return not session.busy and unused_for >= limit

        idle = [session for session in self._sessions.values() if expired(session)]
        for session in idle:
            del self._sessions[session.id]
        await _close_together(idle)
        return [session.id for session in idle]

    def get(self, session_id: str) -> Session:
        """The live session with this id, or the stored one brought back, or a new one."""
        session = self._sessions.get(session_id)
        if session is None:
            if len(self._sessions) >= self.settings.max_sessions:
                raise UserError(
                    f"the server already holds its maximum of {self.settings.max_sessions} sessions; "
                    "try again later (idle ones are closed after --idle-timeout-s) or raise --max-sessions"
                )
            record = self.store.load(session_id)
            session = Session(
                session_id, self.settings, self.router, self.store, record, self._spawn, services=self.services
            )
            self._sessions[session_id] = session
        return session

    async def close_all(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        with anyio.CancelScope(shield=True):
            await _close_together(sessions)
            await self.router.aclose()
            self.memory.close()
            await anyio.to_thread.run_sync(telemetry.shutdown)  # sends the spans still batched


async def _close_together(sessions: list[Session]) -> None:
    """Close sessions at once rather than in turn: each may distil its work first (up to a minute)."""
    async with anyio.create_task_group() as group:
        for session in sessions:
            group.start_soon(session.close)
