"""The viewer's one self-contained HTML page: the checked events embedded as JSON, drawn by its own script.

No network and no external assets: the page is opened from disk, attached to a bug report or mailed, and
must look the same anywhere. The script (page.js) builds only what is on screen: the tree is a virtual
list (rows exist for the ~50 lines in view, however many events there are), a node's details and timeline
are drawn when it is selected, and the search index is built on the first search. So a trace of 100k
sub-calls opens as fast as its JSON parses.

Nothing from the trace is ever parsed as HTML: the data sits in a `<script type="application/json">` with
every `<`, `>` and `&` escaped (so no text in it can close the element), the script puts it on the page
only as text nodes (`textContent`, never `innerHTML`), and a Content-Security-Policy with a fresh nonce
lets no other script, style, image, frame or connection run, should anything slip through regardless.
"""

from __future__ import annotations

import html
import json
import secrets
from collections.abc import Sequence
from importlib import resources
from typing import Any

from rlm_mcp.escaping import printable
from rlm_mcp.viewer.events import LISTED_PROBLEMS, NAME_LIMIT, Event

ASSETS = resources.files("rlm_mcp.viewer")


def asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def embedded_json(value: Any) -> str:
    """JSON that can sit inside a <script> element whatever its strings hold (ASCII, so a lone surrogate
    from a forged trace stays a valid escape instead of failing the page's encoding)."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(
    events: list[Event], title: str, problems: Sequence[str] = (), problem_count: int = 0, follow: bool = False
) -> str:
    """The page for events made by `clean_event`; `problems` (the first lines skipped or changed, of
    `problem_count`) are listed at its top. With `follow`, the page asks the server that served it for the
    trace's new lines every second."""
    nonce = secrets.token_urlsafe(18)
    title = printable(title, NAME_LIMIT)
    listed = [printable(problem, 300) for problem in problems[:LISTED_PROBLEMS]]
    data = {"title": title, "events": events, "follow": follow, "problems": listed, "problem_count": problem_count}
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src data:; "
        f"connect-src 'self'; base-uri 'none'; form-action 'none'"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(policy, quote=True)}">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title, quote=True)}</title>"
        f'<style nonce="{nonce}">{asset("page.css")}</style></head><body>'
        f'<script type="application/json" id="trace-data">{embedded_json(data)}</script>'
        f"{asset('page.html')}"
        f'<script nonce="{nonce}">{asset("page.js")}</script></body></html>'
    )
