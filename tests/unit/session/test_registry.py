"""Which session a call belongs to, decided without starting a worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlm_mcp.errors import UserError
from rlm_mcp.session.registry import SessionRegistry
from tests.conftest import make_settings


def registry(tmp_path: Path, **overrides: object) -> SessionRegistry:
    data = tmp_path / "data"
    data.mkdir(parents=True, exist_ok=True)
    return SessionRegistry(make_settings(tmp_path, data, transport="http", **overrides))


def test_a_call_without_anything_gets_a_new_session_and_its_handle(tmp_path: Path) -> None:
    sessions = registry(tmp_path)
    first = sessions.resolve(None, None)
    assert first.minted and first.created
    again = sessions.resolve(first.session.id, None)
    assert again.session is first.session and not again.minted and not again.created


def test_a_session_named_in_a_header_is_one_per_credential(tmp_path: Path) -> None:
    sessions = registry(tmp_path)
    mine = sessions.resolve(None, None, named=("Bearer one", "work")).session
    assert sessions.resolve(None, None, named=("Bearer one", "work")).session is mine
    assert sessions.resolve(None, None, named=("Bearer two", "work")).session is not mine


def test_unknown_or_malformed_handles_are_refused(tmp_path: Path) -> None:
    sessions = registry(tmp_path)
    for handle in ("0" * 32, "../etc", ""):
        with pytest.raises(UserError, match="no session"):
            sessions.resolve(handle, None)


def test_the_caps_on_sessions_and_on_new_sessions_per_client_hold(tmp_path: Path) -> None:
    sessions = registry(tmp_path, max_sessions=2)
    sessions.resolve(None, None)
    sessions.resolve(None, None)
    with pytest.raises(UserError, match="maximum of 2 sessions"):
        sessions.resolve(None, None)
    quota = registry(tmp_path / "q", max_new_sessions_per_minute=2)
    quota.resolve(None, None, client="10.0.0.1")
    quota.resolve(None, None, client="10.0.0.1")
    with pytest.raises(UserError, match="started 2 sessions in the last minute"):
        quota.resolve(None, None, client="10.0.0.1")
    quota.resolve(None, None, client="10.0.0.2")  # another client has its own quota


@pytest.mark.anyio
async def test_a_refused_calls_new_session_is_discarded_without_a_trace(tmp_path: Path) -> None:
    sessions = registry(tmp_path)
    made = sessions.resolve(None, None)
    await sessions.discard(made)
    with pytest.raises(UserError, match="no session"):
        sessions.resolve(made.session.id, None)
    assert not made.session.dir.exists()
