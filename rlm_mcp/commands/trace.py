"""`rlm-mcp trace`: a session's trace as one self-contained HTML page (`trace FILE.jsonl -o trace.html`),
or served on 127.0.0.1 while the session runs (`trace --follow SESSION`). The page is rlm_mcp/viewer/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rlm_mcp.config import Settings
from rlm_mcp.escaping import printable
from rlm_mcp.session.store import SESSION_ID
from rlm_mcp.viewer import write_html
from rlm_mcp.viewer.follow import follow


def render(trace_file: str | None, output: str | None) -> int:
    if not trace_file:
        print("rlm-mcp: give the trace: rlm-mcp trace SESSION_DIR/trace.jsonl -o trace.html", file=sys.stderr)
        return 2
    source = Path(trace_file)
    target = Path(output) if output else source.with_suffix(".html")
    try:
        written = write_html(source, target)
    except (OSError, ValueError) as exc:
        print(f"rlm-mcp: cannot render {printable(str(source))}: {printable(str(exc))}", file=sys.stderr)
        return 1
    print(f"wrote {printable(str(target))} ({written.events} events)")
    if written.problems:
        print(f"{written.problems} lines of the trace were skipped or changed; the page lists them", file=sys.stderr)
    return 0


def follow_session(settings: Settings, arguments: list[str], port: int) -> int:
    """Serve a session's page while it runs: SESSION is a trace file, a session's directory or its id."""
    if len(arguments) != 1:
        print("rlm-mcp trace --follow: give one session: its id, its directory or its trace.jsonl", file=sys.stderr)
        return 2
    given = Path(arguments[0])
    if given.is_dir():
        given = given / "trace.jsonl"
    elif not given.exists() and SESSION_ID.fullmatch(arguments[0]):
        given = settings.workspace / "sessions" / arguments[0] / "trace.jsonl"
    if not given.parent.is_dir():
        print(f"rlm-mcp trace --follow: no session at {printable(str(given.parent))}", file=sys.stderr)
        return 2
    try:
        return follow(given, port)
    except OSError as exc:
        print(f"rlm-mcp trace --follow: cannot serve on 127.0.0.1:{port}: {printable(str(exc))}", file=sys.stderr)
        return 1
