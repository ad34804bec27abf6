"""What the HTTP backends share: the transport they send through and how they read an error status."""

from __future__ import annotations

import itertools
import math
import socket

import httpx2

from rlm_mcp.errors import SubCallError

# Requests are small writes on long-lived connections: without TCP_NODELAY, Nagle's algorithm can hold a
# request body back until the server's delayed ACK, tens of milliseconds per call on a local endpoint.
NO_DELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
POOL_LIMITS = httpx2.Limits(max_connections=1_000, max_keepalive_connections=100)
CONNECTIONS_PER_POOL = 4


class ShardedTransport(httpx2.AsyncBaseTransport):
    """Requests spread round-robin over several small connection pools instead of one large one.

    httpcore's pool re-examines every connection it holds on each request and each response, probing the
    socket of every idle one; with 32 connections that is most of the client's CPU per call, and it stays
    on the critical path of every later call once a batch has opened them. Pools of about 4 connections
    keep each scan short; the router's limiter, not the pools, bounds the requests in flight.
    """

    def __init__(self, concurrency: int) -> None:
        shards = max(1, math.ceil(concurrency / CONNECTIONS_PER_POOL))
        tls = httpx2.create_ssl_context()  # loading the CA bundle takes ~20 ms: once, not once per pool
        self._pools = [
            httpx2.AsyncHTTPTransport(verify=tls, socket_options=NO_DELAY, limits=POOL_LIMITS) for _ in range(shards)
        ]
        self._turn = itertools.cycle(self._pools)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return await next(self._turn).handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


def status_error(status: int, message: str) -> SubCallError:
    """Which statuses are worth another attempt, and how the router should name the failure."""
    retryable = status in (408, 409, 425, 429) or status >= 500
    kind = "rate_limited" if status == 429 else ("overloaded" if status == 529 else "provider")
    return SubCallError(f"the provider answered {status}: {message}", kind=kind, retryable=retryable, status=status)
