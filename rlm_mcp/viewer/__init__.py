"""`rlm-mcp trace`: a session's trace as one self-contained page (events.py checks the lines, page.py and
page.js draw them), and `rlm-mcp trace --follow`, the same page served on 127.0.0.1 while the session runs
(follow.py)."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from rlm_mcp.viewer.events import load_events
from rlm_mcp.viewer.page import render


class Written(NamedTuple):
    events: int  # shown in the page
    problems: int  # lines skipped as not events, or events with a field neutralised; listed in the page


def title_of(trace: Path) -> str:
    return f"rlm-mcp trace: {trace.parent.name or trace.name}"


def write_html(trace: Path, output: Path) -> Written:
    """Render `trace` into `output`: how many events it shows, and how many lines it skipped or changed."""
    events, reader = load_events(trace)
    output.write_text(render(events, title_of(trace), reader.problems, reader.problem_count), encoding="utf-8")
    return Written(len(events), reader.problem_count)
