"""A static HTTP server on 127.0.0.1 over one directory, quiet: the remote source of the URL and map tests
and of bench_cluster.py. It can record every request target it was sent (so a test can prove that a URL
outside the allowed prefix was never requested) and answer chosen paths with a redirect."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def serving(
    directory: Path, requested: list[str] | None = None, redirects: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Yields the server's base URL (ending in /) while it serves `directory`. `requested`, if given, gets
    the raw target of every request (as sent, before the server's own decoding); `redirects` maps a raw
    target to the Location of a 302 answer."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def send_head(self) -> Any:
            if requested is not None:
                requested.append(self.path)
            if redirects is not None and self.path in redirects:
                self.send_response(302)
                self.send_header("Location", redirects[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            return super().send_head()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that stops reading (a fetch over its cap) is no error of the server's

    server = Server(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
