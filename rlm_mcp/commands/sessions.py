"""`rlm-mcp sessions`: list the workspace's saved sessions, or delete one (`--delete ID`)."""

from __future__ import annotations

import sys
import time

from rlm_mcp.config import Settings
from rlm_mcp.escaping import printable
from rlm_mcp.memory.service import session_tag
from rlm_mcp.session.store import SessionStore


def run(settings: Settings, delete: str | None) -> int:
    """List the saved sessions (id, last use, contexts, saved variables), or delete one.

    Context names and ids come from records that model-written code had a hand in, and go to a terminal:
    each is printed through `printable`, so an ANSI escape or a newline in one shows as text.
    """
    store = SessionStore(settings.workspace)
    if delete is not None:
        if not store.delete(delete):
            print(f"rlm-mcp: no saved session '{printable(delete)}' in {printable(str(store.root))}", file=sys.stderr)
            return 1
        print(f"deleted session {printable(delete)}")
        return 0
    for session in store.list():
        try:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(session.get("updated") or 0))
        except (TypeError, ValueError, OverflowError, OSError):
            when = "?"
        contexts = ", ".join(printable(str(name), 200) for name in session["contexts"]) or "no contexts"
        tag = session_tag(str(session["id"]))  # how the memory names it (rlm-mcp handbook show, findings)
        print(
            f"{printable(str(session['id']), 200)}  {when}  {contexts}; {session['variables']} saved variables; "
            f"memory tag {tag}"
        )
    return 0
