"""Serving over streamable HTTP: many clients, each in its own session, on loopback unless a token guards it.

The MCP SDK's app does the protocol, Host/Origin checks (DNS rebinding), the body limit and its own session
cap; this module adds the bearer token (compared in constant time) and refuses a request with more than
one Authorization header (the header that passed the check is the one that owns named sessions and
tasks). A REPL server that accepts requests without a token is code execution for anyone who can reach
it, and on loopback that is every local user:
so on loopback without `--auth-token` a token is minted at start and printed to stderr (as Jupyter does),
unless `--no-auth` says otherwise; beyond loopback the operator must give one.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import sys
from typing import Any

from mcp.server.transport_security import TransportSecuritySettings

from rlm_mcp.config import Settings
from rlm_mcp.errors import SettingsError

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PATH = "/mcp"


def check_http_settings(settings: Settings) -> None:
    """Beyond loopback the operator chooses the token: one minted here would have to travel somehow."""
    if settings.host not in LOOPBACK and not settings.auth_token:
        raise SettingsError(
            f"refusing to listen on {settings.host} without a token: anyone who can reach it could run code "
            "here. Set RLM_MCP_AUTH_TOKEN (or --auth-token), or listen on 127.0.0.1"
        )


def bearer_token(settings: Settings) -> str | None:
    """The token requests must carry: the operator's, or one minted now and printed; None with --no-auth."""
    if settings.auth_token:
        return settings.auth_token
    if settings.no_auth:
        log.warning("--no-auth: any local user can run code in this server's REPL sessions")
        return None
    token = secrets.token_urlsafe(32)
    print(
        f"rlm-mcp: HTTP clients must send the header\n    Authorization: Bearer {token}\n"
        "  (set RLM_MCP_AUTH_TOKEN to choose the token, or pass --no-auth on loopback to go without)",
        file=sys.stderr,
        flush=True,
    )
    return token


class BearerToken:
    """ASGI middleware: every HTTP request must carry exactly one Authorization header, and with a token,
    `Authorization: Bearer <token>`. One, because the same header names the owner of a named session or a
    task (tasks.authorization): two would let the check read one and the owner lookup the other."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = [value for name, value in scope.get("headers") or [] if name.lower() == b"authorization"]
            if len(given) > 1:
                await _refuse(send, 400, b"more than one Authorization header")
                return
            if self.expected is not None and not hmac.compare_digest(given[0] if given else b"", self.expected):
                await _refuse(send, 401, b"missing or wrong bearer token")
                return
        await self.app(scope, receive, send)


async def _refuse(send: Any, status: int, why: bytes) -> None:
    headers = [(b"content-type", b"text/plain")] + ([(b"www-authenticate", b"Bearer")] if status == 401 else [])
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": why})


def build_app(settings: Settings) -> Any:
    from rlm_mcp.surface.server import build_server

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
    return BearerToken(app, bearer_token(settings))  # without a token (--no-auth), still one header at most


def serve(settings: Settings) -> None:
    import uvicorn

    app = build_app(settings)
    log.info("serving streamable HTTP on http://%s:%d%s", settings.host, settings.port, PATH)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", log_config=None)
