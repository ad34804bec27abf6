"""`rlm-mcp trace --follow`: a session's page served on 127.0.0.1, fed the trace's new lines as they land.

The page is the static viewer's (page.py) started empty; its script asks `events?offset=N&line=L` once a
second and gets the complete lines appended since byte N, checked by the same TraceReader the static page
uses. The server reads the trace without following a link or opening a FIFO (safefs), since the session
directory is written while model-written code runs.

A trace holds the session's code, prompts and answers, and any local user can connect to 127.0.0.1: so the
page lives under a random path printed once (like a notebook server's token), a request whose Host is not
this loopback address is refused (a web page elsewhere cannot reach it by DNS rebinding), and the
responses forbid caching, framing and sniffing.
"""

from __future__ import annotations

import logging
import secrets
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from rlm_mcp import safefs
from rlm_mcp.units import MiB
from rlm_mcp.viewer import title_of
from rlm_mcp.viewer.events import TraceReader
from rlm_mcp.viewer.page import embedded_json, render

log = logging.getLogger(__name__)

BATCH_BYTES = 4 * MiB  # of the trace per answer; the page asks again at once while there is more


class Follower:
    """The trace being followed, read from where each page left off (a reader per page, by its offset)."""

    def __init__(self, trace: Path) -> None:
        self.trace = trace
        self._lock = threading.Lock()
        self._readers: dict[tuple[int, int], TraceReader] = {}  # (offset, line) a page reached -> its reader

    def batch(self, offset: int, line: int) -> dict[str, object]:
        data, size = safefs.read_from(self.trace, offset, BATCH_BYTES)
        reset = size < offset  # the trace was replaced by a shorter one: start the page again
        if reset:
            offset, line = 0, 0
            data, size = safefs.read_from(self.trace, 0, BATCH_BYTES)
        end = data.rfind(b"\n") + 1  # only whole lines; the rest comes when its newline has been written
        if end == 0 and len(data) == BATCH_BYTES:  # one line longer than a batch: skip it, the reader says so
            end = len(data)
        with self._lock:
            reader = self._readers.pop((offset, line), None) or TraceReader(line=line)
        events, problems = reader.read_lines(data[:end].splitlines())
        with self._lock:
            self._readers[(offset + end, reader.line)] = reader
            while len(self._readers) > 64:  # pages that went away
                self._readers.pop(next(iter(self._readers)))
        return {
            "events": events,
            "problems": problems,
            "offset": offset + end,
            "line": reader.line,
            "more": offset + end < size,
            "reset": reset,
            "trace": self.trace.parent.name or self.trace.name,
        }


def make_server(trace: Path, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """The server (not yet serving) and the page's address."""
    follower = Follower(trace)
    token = secrets.token_urlsafe(24)
    page = render([], title_of(trace), follow=True).encode("utf-8")

    class Handler(BaseHTTPRequestHandler):
        server_version = "rlm-mcp-trace"
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
                    body = embedded_json(follower.batch(offset, line)).encode("ascii")
                except ValueError:
                    self._send(HTTPStatus.BAD_REQUEST, b"offset and line are whole numbers\n", "text/plain")
                    return
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
