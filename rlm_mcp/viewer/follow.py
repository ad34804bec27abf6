"""`rlm-mcp trace --follow`: a session's page served on 127.0.0.1, fed the trace's new lines as they land.

The page is the static viewer's (page.py) started empty; its script asks `events?offset=N&line=L` once a
second and gets the whole lines appended since byte N, read and checked as the static page's are
(events.whole_lines, TraceReader: no link followed, no FIFO opened).

A trace holds the session's code, prompts and answers, and any local user can connect to 127.0.0.1: so the
page lives under a random path printed once (like a notebook server's token), a request whose Host is not
this loopback address is refused (a web page elsewhere cannot reach it by DNS rebinding), and the
responses forbid caching, framing and sniffing.
"""

from __future__ import annotations

import logging
import secrets
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from rlm_mcp.trace import whole_lines
from rlm_mcp.viewer import title_of
from rlm_mcp.viewer.events import TraceReader
from rlm_mcp.viewer.page import embedded_json, render

log = logging.getLogger(__name__)


def batch(trace: Path, offset: int, line: int) -> dict[str, object]:
    """The events of the whole lines written since byte `offset` (line `line`), for a following page.

    Stateless: the page sends back where it is, so any number of pages can follow one trace, and the page
    checks repeated ids itself across batches. A trace now shorter than `offset` was replaced: the page
    starts again from its first line (`reset`).
    """
    lines, after, size = whole_lines(trace, offset)
    reset = size < offset
    if reset:
        offset, line = 0, 0
        lines, after, size = whole_lines(trace, 0)
    reader = TraceReader(line=line)
    events = reader.read_lines(lines)
    return {
        "events": events,
        "problems": reader.problems,
        "problem_count": reader.problem_count,
        "offset": after,
        "line": reader.line,
        "more": after > offset and after < size,  # another batch is ready: the page asks at once
        "reset": reset,
        "trace": trace.parent.name or trace.name,
    }


def make_server(trace: Path, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """The server (not yet serving) and the page's address."""
    token = secrets.token_urlsafe(24)
    page = render([], title_of(trace), follow=True).encode("utf-8")

    class Handler(BaseHTTPRequestHandler):
        server_version = "rlm-mcp-trace"
        timeout = 30  # an idle connection is closed: any local user can open some, token or not
        sys_version = ""

        def log_message(self, format: str, *args: object) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def do_GET(self) -> None:
            host = self.headers.get("Host", "")
            if host not in (f"127.0.0.1:{self.server.server_port}", f"localhost:{self.server.server_port}"):
                self._send(HTTPStatus.FORBIDDEN, b"this page is served to 127.0.0.1 only\n", "text/plain")
                return
            url = urlsplit(self.path)
            if url.path == f"/{token}/":
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            elif url.path == f"/{token}/events":
                query = parse_qs(url.query)
                try:
                    offset, line = (max(0, int(query.get(name, ["0"])[0])) for name in ("offset", "line"))
                except ValueError:
                    self._send(HTTPStatus.BAD_REQUEST, b"offset and line are whole numbers\n", "text/plain")
                    return
                try:
                    body = embedded_json(batch(trace, offset, line)).encode("ascii")
                except OSError as exc:
                    message = f"cannot read the trace: {exc.strerror or exc}\n".encode("utf-8", "replace")
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, message, "text/plain")
                    return
                self._send(HTTPStatus.OK, body, "application/json")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server, f"http://127.0.0.1:{server.server_port}/{token}/"


def follow(trace: Path, port: int = 0) -> int:
    """Serve until interrupted; the address goes to stdout, for the user to open."""
    server, address = make_server(trace, port)
    print(f"following {trace}: open {address} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
