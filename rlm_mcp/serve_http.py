"""Serving over streamable HTTP: many clients, each in its own session, on loopback unless a token guards it.

The MCP SDK's app does the protocol, Host/Origin checks (DNS rebinding), the body limit and its own session
cap; this module adds the bearer token (compared in constant time) and refuses to listen beyond loopback
without one, since a REPL server reachable from the network without a token is remote code execution.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings

from rlm_mcp.config import Settings, SettingsError

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PATH = "/mcp"


def check_http_settings(settings: Settings) -> None:
    if settings.host not in LOOPBACK and not settings.auth_token:
        raise SettingsError(
            f"refusing to listen on {settings.host} without a token: anyone who can reach it could run code "
            "here. Set RLM_MCP_AUTH_TOKEN (or --auth-token), or listen on 127.0.0.1"
        )


class BearerToken:
    """ASGI middleware: every HTTP request must carry `Authorization: Bearer <token>`."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})  # fmt: skip
                await send({"type": "http.response.body", "body": b"missing or wrong bearer token"})
                return
        await self.app(scope, receive, send)


def build_app(settings: Settings) -> Any:
    from rlm_mcp.server import build_server

    check_http_settings(settings)
    hosts = sorted({settings.host, *LOOPBACK})
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{host}:*" if ":" not in host else f"[{host}]:*" for host in hosts],
        allowed_origins=[f"http://{host}:*" if ":" not in host else f"http://[{host}]:*" for host in hosts],
    )
    app = build_server(settings).streamable_http_app(
        streamable_http_path=PATH,
        max_request_body_size=settings.max_body_bytes,
        session_idle_timeout=settings.idle_timeout_s,
        max_sessions=settings.max_sessions,
        transport_security=security,
        host=settings.host,
    )
    return BearerToken(app, settings.auth_token) if settings.auth_token else app


def serve(settings: Settings) -> None:
    import uvicorn

    app = build_app(settings)
    log.info("serving streamable HTTP on http://%s:%d%s", settings.host, settings.port, PATH)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", log_config=None)
