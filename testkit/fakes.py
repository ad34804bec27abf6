"""Fake LLM providers on loopback that speak the real wire formats.

The sub-LLM router is tested through the real clients (the `anthropic` SDK and a plain `httpx2` client),
not through mocks of them: a mock would only prove the router agrees with the mock, while a fake server
proves it agrees with the SDK's real request building, response parsing and status-to-exception mapping.
One `FakeProvider` serves all three APIs on one ephemeral 127.0.0.1 port:

- Anthropic Messages: ``POST /v1/messages`` (point ``AsyncAnthropic(base_url=provider.base_url)`` at it), plain
  JSON or, with ``stream: true``, Server-Sent Events as the real API sends them; plus
  ``POST /v1/messages/count_tokens``, which Claude Code calls besides the model;
- OpenAI-compatible chat completions: ``POST /v1/chat/completions`` (base URL ``provider.openai_base_url``);
- OpenAI Responses: ``POST /v1/responses`` (same base URL), plain JSON or SSE, which is what Codex speaks.

Streaming exists so the real coding-agent CLIs (Claude Code, Codex), which only ever stream, can use the fake
as their provider. A streamed answer is the same message a plain request would get, cut into events, so latency,
scripted failures, records and key checks apply to both alike; an error is never streamed: like the real APIs,
a request that fails before its stream starts gets a plain JSON error with its status. The side requests the
CLIs make besides model calls (count_tokens, a start-up probe, a model list) get sensible answers, and any
other path a JSON 404.

Everything a router test needs to assert on is observable and deterministic: the requests in arrival order,
the current and peak number of requests in flight, per-status counts, the API keys that reached it, token
counts computed from text length, and failures scripted by position (`fail_next`) or content (`fail_when`).

It runs either inside the test's own event loop (`async with FakeProvider.running() as provider:`), or in a
background thread with its own loop (`FakeProvider.start_in_thread()`), for tests that put the server under
test in a subprocess and for benchmark scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import json
import math
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskStatus

__all__ = [
    "AnswerFn",
    "FailureRule",
    "FakeProvider",
    "ProviderError",
    "RecordedRequest",
    "ToolUse",
    "count_tokens",
    "default_answer",
]

AnswerFn = Callable[..., Any]
"""``answer(prompt, system, model)``: the fake model, returning a str (or a `ToolUse`, to call a tool). May be a
coroutine function (e.g. to wait on an event). One that also takes a keyword ``request`` gets the request's
parsed JSON body, so a scripted root model can follow its whole conversation."""

ANTHROPIC_PATH = "/v1/messages"
OPENAI_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
HELLO_PATH = "/api/hello"  # Claude Code's start-up connection probe
MODELS_PATH = "/v1/models"  # Codex's model-list refresh

# The model endpoints, by path, and the `RecordedRequest.api` each is recorded under.
_MODEL_APIS: dict[str, str] = {ANTHROPIC_PATH: "anthropic", OPENAI_PATH: "openai", RESPONSES_PATH: "responses"}

# Error `type` in the Anthropic error body, by status, as the real API sends them.
_ANTHROPIC_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

# (`type`, `code`) in the OpenAI error body, by status, as OpenAI-compatible servers send them.
_OPENAI_ERROR_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
    503: ("server_error", "overloaded"),
    529: ("server_error", "overloaded"),
}

_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Invalid request.",
    401: "invalid x-api-key",
    403: "Your API key does not have permission to use the specified resource.",
    404: "The requested resource could not be found.",
    429: "Number of request tokens has exceeded your per-minute rate limit.",
    500: "Internal server error.",
    503: "Service unavailable.",
    529: "Overloaded",
}


def count_tokens(text: str) -> int:
    """The fake's tokenizer: ceil(chars / 4). Public so tests can compute the usage they expect."""
    return math.ceil(len(text) / 4)


def default_answer(prompt: str, system: str | None, model: str) -> str:
    """Echo the last user message, so a test can tell which prompt produced which answer."""
    return f"echo: {prompt}"


class ProviderError(Exception):
    """Raise from an answer function to make that request fail with an API error of this status.

    Lets a test fail requests by any rule it can compute from the prompt (e.g. "every third chunk"), in the
    right wire format for whichever endpoint was called.
    """

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        error_type: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message or _DEFAULT_MESSAGES.get(status, f"HTTP {status}"))
        self.status = status
        self.message = message or _DEFAULT_MESSAGES.get(status, f"HTTP {status}")
        self.error_type = error_type
        self.retry_after = retry_after
        self.headers = dict(headers or {})


@dataclass
class ToolUse:
    """Return this from an answer function to make the fake model call a tool (Anthropic Messages, or a function
    call in chat completions), saying `text` first if given."""

    name: str
    input: dict[str, Any]
    text: str = ""


@dataclass
class FailureRule:
    """A scripted failure; see `FakeProvider.fail_next` and `FakeProvider.fail_when`.

    `remaining` counts the requests it still applies to (None: every matching request, forever).
    `latency` replaces the provider's latency for the failed request (None: same as a success).
    """

    status: int
    remaining: int | None
    contains: str | None = None
    message: str | None = None
    error_type: str | None = None
    retry_after: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    latency: float | None = None

    def error(self) -> ProviderError:
        return ProviderError(
            self.status, self.message, error_type=self.error_type, retry_after=self.retry_after, headers=self.headers
        )


@dataclass
class RecordedRequest:
    """One received HTTP request, as the provider saw it; `status` is filled in once the response is sent.

    `prompt` is the text of the last user message (what the answer function gets), `system` the system
    prompt flattened to text, and `text` everything the input token count was computed from.
    """

    index: int
    path: str
    method: str
    api: str | None  # "anthropic", "openai", "responses"; None for other paths, count_tokens included
    body: Any  # parsed JSON, or None if the body was not JSON
    headers: dict[str, str]  # lower-cased names
    arrived_at: float  # time.monotonic()
    model: str | None = None
    system: str | None = None
    prompt: str = ""
    text: str = ""
    api_key: str | None = None  # x-api-key, or the token of "authorization: Bearer ..."
    client_port: int | None = None  # the client's TCP port: one per connection, so tests can count connections
    status: int | None = None
    finished_at: float | None = None
    disconnected: bool = False  # the client went away before the response was sent
    stream: bool = False  # the client asked for Server-Sent Events (`stream: true`)


@dataclass
class _Parsed:
    model: str
    system: str | None
    prompt: str
    text: str
    max_tokens: int | None
    cached_prefix: str = ""
    stream: bool = False
    body: dict[str, Any] = field(default_factory=dict)  # the request, for replies that echo its settings


class _InvalidRequest(Exception):
    """A request the real API would refuse with 400 before any model work."""


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without signal handling, reporting when it listens, and stopping without polling.

    uvicorn normally installs SIGINT/SIGTERM handlers from the main thread; inside a pytest process that would
    swallow Ctrl-C and re-raise it when the fake stops, so the fake leaves signals to its host. Its main loop
    also polls `should_exit` every 0.1 s; waiting on an event instead makes each fake stop that much sooner,
    which adds up over a test suite that starts one per test.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()
        self._exit = anyio.Event()
        self._loop = asyncio.get_running_loop()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)  # sets the default (date) headers
        if not self.should_exit:
            await self._exit.wait()

    def request_exit(self) -> None:
        """Callable from any thread."""
        self.should_exit = True
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing left to stop
            self._loop.call_soon_threadsafe(self._exit.set)


class FakeProvider:
    """A fake Anthropic + OpenAI-compatible provider; see the module docstring.

    Configuration attributes (`answer`, `latency`, `jitter`, `require_api_key`) may be changed while it runs.
    Counters and records are guarded by a threading lock, so they can be read from another thread (thread mode)
    while requests are being served.
    """

    def __init__(
        self,
        *,
        answer: AnswerFn = default_answer,
        latency: float = 0.0,
        jitter: float | tuple[float, float] = 0.0,
        seed: int | None = None,
        require_api_key: str | None = None,
        prompt_cache: bool = False,
        cache_min_tokens: int = 1024,
    ) -> None:
        """
        answer: the fake model, ``answer(prompt, system, model) -> str`` (or an awaitable of it).
        latency: seconds each request takes before its response is sent (slept with `anyio.sleep`).
        jitter: extra random seconds per request: ``j`` for uniform(0, j), or a ``(low, high)`` range.
        seed: seeds the jitter, drawn in arrival order, so delays are reproducible.
        require_api_key: if set, a request whose x-api-key / bearer token differs gets 401, like the real APIs.
        prompt_cache: simulate Anthropic prompt caching of system blocks marked with cache_control: the first
            request writes the prefix (cache_creation_input_tokens), later ones read it (cache_read_input_tokens);
            input_tokens is then the rest, so the three always add up to the uncached count.
        cache_min_tokens: prefixes shorter than this are not cached, as with the real API.
        """
        self.answer: AnswerFn = answer
        self._wants_request = "request" in inspect.signature(answer).parameters
        self.latency = latency
        self.jitter = jitter
        self.require_api_key = require_api_key
        self.prompt_cache = prompt_cache
        self.cache_min_tokens = cache_min_tokens
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._rules: list[FailureRule] = []
        self._status_counts: Counter[int] = Counter()
        self._cache: set[str] = set()
        self._count = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._disconnects = 0
        self._ids = 0
        self._port: int | None = None
        self._server: _EmbeddedServer | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------------- lifecycle

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, **options: Any) -> AsyncIterator[FakeProvider]:
        """Serve in the current event loop for the duration of the block; options go to `__init__`."""
        provider = cls(**options)
        async with anyio.create_task_group() as tg:
            done = anyio.Event()

            async def serve(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
                try:
                    await provider._serve(task_status=task_status)
                finally:
                    done.set()

            await tg.start(serve)
            try:
                yield provider
            finally:
                provider._request_exit()
                # Shielded so that a failing or cancelled test still closes the listening socket cleanly.
                with anyio.move_on_after(5, shield=True):
                    await done.wait()
                tg.cancel_scope.cancel()

    @classmethod
    def start_in_thread(cls, **options: Any) -> FakeProvider:
        """Serve from a daemon thread with its own event loop until `stop()`; options go to `__init__`.

        For callers that are not in an event loop, or whose client runs in another process (a subprocess can
        reach `base_url` over loopback).
        """
        provider = cls(**options)
        ready = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                await tg.start(provider._serve)
                ready.set()

        def run() -> None:
            try:
                anyio.run(main, backend="asyncio")
            except BaseException as exc:
                errors.append(exc)
            finally:
                ready.set()

        thread = threading.Thread(target=run, name=f"FakeProvider-{id(provider):x}", daemon=True)
        provider._thread = thread
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake provider did not start within 10 s")
        if errors:
            raise RuntimeError("the fake provider failed to start") from errors[0]
        return provider

    def stop(self, timeout: float = 5.0) -> None:
        """Stop a provider started with `start_in_thread` and wait for its thread; idempotent."""
        if self._thread is None:
            raise RuntimeError("stop() is for start_in_thread(); a running() provider stops when its block exits")
        self._request_exit()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError(f"the fake provider thread did not stop within {timeout:g} s")

    def __enter__(self) -> FakeProvider:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _request_exit(self) -> None:
        if self._server is not None:
            self._server.request_exit()

    async def _serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Bind 127.0.0.1:0 ourselves (so the port is known before serving), then run uvicorn until asked to exit."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # h11 writes a response's head and body separately; without TCP_NODELAY (inherited by accepted sockets)
        # Nagle holds the body until the client's delayed ACK, adding ~40 ms to every request on loopback.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind(("127.0.0.1", 0))
            self._port = sock.getsockname()[1]
            config = uvicorn.Config(
                self._asgi,
                http="h11",
                interface="asgi3",
                proxy_headers=False,
                lifespan="off",
                log_config=None,  # leave the host's logging configuration alone
                log_level="warning",
                access_log=False,
                server_header=False,
                timeout_graceful_shutdown=1,
            )
            server = _EmbeddedServer(config)
            self._server = server
            async with anyio.create_task_group() as tg:
                tg.start_soon(server.serve, [sock])
                await server.ready.wait()
                task_status.started()
        finally:
            sock.close()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the fake provider is not running")
        return self._port

    @property
    def base_url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``: what `AsyncAnthropic(base_url=...)` expects."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``.../v1``: what OpenAI-style clients expect (they append ``/chat/completions``)."""
        return f"{self.base_url}/v1"

    # ------------------------------------------------------------------------------------ scripting

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 429,
        message: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        latency: float | None = None,
    ) -> FailureRule:
        """Make the next `n` requests to arrive fail with `status` (rules are checked in the order added)."""
        return self._add_rule(
            FailureRule(status, n, None, message, error_type, retry_after, dict(headers or {}), latency)
        )

    def fail_when(
        self,
        contains: str,
        *,
        status: int = 400,
        times: int | None = None,
        message: str | None = None,
        error_type: str | None = None,
        retry_after: float | None = None,
        headers: Mapping[str, str] | None = None,
        latency: float | None = None,
    ) -> FailureRule:
        """Fail requests whose text (system prompt + all messages) contains `contains`; `times=None`: always."""
        return self._add_rule(
            FailureRule(status, times, contains, message, error_type, retry_after, dict(headers or {}), latency)
        )

    def _add_rule(self, rule: FailureRule) -> FailureRule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear_failures(self) -> None:
        with self._lock:
            self._rules.clear()

    def reset(self) -> None:
        """Forget recorded requests, counters, the prompt cache and scripted failures (not the configuration)."""
        with self._lock:
            self._requests.clear()
            self._rules.clear()
            self._status_counts.clear()
            self._cache.clear()
            self._count = 0
            self._max_in_flight = self._in_flight
            self._disconnects = 0

    # ---------------------------------------------------------------------------------- observability

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order (a snapshot)."""
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return self._count

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        """Peak number of requests between arrival (body read) and response sent (or client gone)."""
        with self._lock:
            return self._max_in_flight

    @property
    def status_counts(self) -> Counter[int]:
        """Responses sent, by HTTP status (a snapshot)."""
        with self._lock:
            return Counter(self._status_counts)

    @property
    def disconnects(self) -> int:
        """Requests whose client went away (e.g. a cancelled call) before the response was sent."""
        with self._lock:
            return self._disconnects

    @property
    def api_keys(self) -> list[str | None]:
        """The key each request carried (x-api-key or bearer token), in arrival order."""
        with self._lock:
            return [request.api_key for request in self._requests]

    @property
    def prompts(self) -> list[str]:
        """The last user message of each request, in arrival order."""
        with self._lock:
            return [request.prompt for request in self._requests]

    # -------------------------------------------------------------------------------------- serving

    async def _asgi(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            return
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            raw += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path: str = scope["path"]
        api = _MODEL_APIS.get(path)
        record = RecordedRequest(
            index=0,
            path=path,
            method=scope["method"],
            api=api,
            body=body,
            headers=headers,
            arrived_at=time.monotonic(),
            api_key=_api_key(headers),
            client_port=(scope.get("client") or (None, None))[1],
        )
        parsed: _Parsed | None = None
        invalid: str | None = None
        parser = _PARSERS.get(path)
        if parser is not None and scope["method"] == "POST":
            try:
                parsed = parser(body)
            except _InvalidRequest as exc:
                invalid = str(exc)
            if parsed is not None:
                record.model, record.system, record.prompt, record.text, record.stream = (
                    parsed.model,
                    parsed.system,
                    parsed.prompt,
                    parsed.text,
                    parsed.stream,
                )

        with self._lock:
            record.index = self._count
            self._count += 1
            self._requests.append(record)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            # Only model calls consume scripted failures: a client's side calls (count_tokens, probes) must not
            # eat a `fail_next` meant for the call under test.
            rule = self._match_rule(parsed) if parsed is not None and api is not None else None
            delay = self._draw_delay(rule)

        status = 0
        sending = False
        disconnected = False
        try:
            async with anyio.create_task_group() as tg:

                async def watch_disconnect() -> None:
                    nonlocal disconnected
                    message = await receive()
                    if message["type"] == "http.disconnect" and not sending:
                        disconnected = True
                        tg.cancel_scope.cancel()

                tg.start_soon(watch_disconnect)
                status, payload, extra = await self._respond(api, scope["method"], parsed, invalid, record, rule, delay)
                # Only a success is streamed: the real APIs refuse a request with a plain JSON error before any
                # event, so clients read errors the same way whether they asked for a stream or not.
                events = _stream_events(api, payload) if status == 200 and parsed and parsed.stream else None
                if events is None:
                    encoded = json.dumps(payload).encode()
                    head = {"content-type": "application/json", "content-length": str(len(encoded)), **extra}
                else:
                    encoded = b""
                    head = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", **extra}
                sending = True
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head.items()],
                    }
                )
                if events is None:
                    await send({"type": "http.response.body", "body": encoded})
                else:
                    # One body chunk per event, so a client sees them arrive one by one as from the real API.
                    for name, data in events:
                        chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    await send({"type": "http.response.body", "body": b""})
                tg.cancel_scope.cancel()
        finally:
            with self._lock:
                self._in_flight -= 1
                record.finished_at = time.monotonic()
                if disconnected:
                    record.disconnected = True
                    self._disconnects += 1
                elif sending:
                    record.status = status
                    self._status_counts[status] += 1

    def _match_rule(self, parsed: _Parsed) -> FailureRule | None:
        """First live rule that applies; called under the lock, in arrival order, so `fail_next` is exact."""
        for rule in self._rules:
            if rule.remaining is not None and rule.remaining <= 0:
                continue
            if rule.contains is not None and rule.contains not in parsed.text:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
            return rule
        return None

    def _draw_delay(self, rule: FailureRule | None) -> float:
        if rule is not None and rule.latency is not None:
            return rule.latency
        jitter = self.jitter
        low, high = (0.0, jitter) if isinstance(jitter, (int, float)) else jitter
        extra = self._random.uniform(low, high) if high > 0 else 0.0
        return self.latency + extra

    async def _respond(
        self,
        api: str | None,
        method: str,
        parsed: _Parsed | None,
        invalid: str | None,
        record: RecordedRequest,
        rule: FailureRule | None,
        delay: float,
    ) -> tuple[int, Any, dict[str, str]]:
        """Status, JSON payload and extra headers for one request, after its latency."""
        if api is None:
            return self._side_call(method, parsed, invalid, record)
        if method != "POST":
            return self._error(
                api, ProviderError(405, f"Method not allowed: {method}", error_type="invalid_request_error")
            )
        if self.require_api_key is not None and record.api_key != self.require_api_key:
            message = "invalid x-api-key" if api == "anthropic" else "Incorrect API key provided."
            return self._error(api, ProviderError(401, message))
        if invalid is not None or parsed is None:
            return self._error(api, ProviderError(400, invalid or "Invalid request body."))
        if delay > 0:
            await anyio.sleep(delay)
        if rule is not None:
            return self._error(api, rule.error())
        try:
            extra = {"request": parsed.body} if self._wants_request else {}
            result = self.answer(parsed.prompt, parsed.system, parsed.model, **extra)
            text = await result if inspect.isawaitable(result) else result
        except ProviderError as exc:
            return self._error(api, exc)
        except Exception as exc:
            return self._error(api, ProviderError(500, f"the fake model raised {type(exc).__name__}: {exc}"))
        if isinstance(text, ToolUse):
            if api == "responses":
                return self._error(api, ProviderError(400, "the fake speaks tool use in Messages and chat completions"))
            return self._tool_use(parsed, text) if api == "anthropic" else self._tool_call(parsed, text)
        return self._success(api, parsed, str(text))

    def _side_call(
        self, method: str, parsed: _Parsed | None, invalid: str | None, record: RecordedRequest
    ) -> tuple[int, Any, dict[str, str]]:
        """Paths that are not model calls but that the CLIs send, answered instantly and never scripted to fail
        (so they cannot eat a `fail_next` meant for a model call); anything else is a JSON 404, in the Anthropic
        format the fake has always used.

        - ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``, key-checked like the API;
        - ``GET|HEAD /api/hello``: 200; Claude Code sends a HEAD there at start-up to warm the connection;
        - ``GET /v1/models``: an empty model list, key-checked; Codex asks for it with a ChatGPT login. The list
          carries both the OpenAI shape (``data``) and the Codex backend's (``models``), so either client can
          parse it, and an empty list leaves Codex on the model catalog it ships with.
        """
        path = record.path
        if path == HELLO_PATH and method in ("GET", "HEAD"):
            return 200, {}, {}
        if path == MODELS_PATH and method == "GET":
            if self.require_api_key is not None and record.api_key != self.require_api_key:
                return self._error("openai", ProviderError(401, "Incorrect API key provided."))
            return (
                200,
                {"object": "list", "data": [], "models": []},
                {"x-request-id": f"req_fake{self._next_id():020d}"},
            )
        if path != COUNT_TOKENS_PATH:
            return self._error("anthropic", ProviderError(404, f"Not found: {method} {path}"))
        if method != "POST":
            return self._error(
                "anthropic", ProviderError(405, f"Method not allowed: {method}", error_type="invalid_request_error")
            )
        if self.require_api_key is not None and record.api_key != self.require_api_key:
            return self._error("anthropic", ProviderError(401, "invalid x-api-key"))
        if invalid is not None or parsed is None:
            return self._error("anthropic", ProviderError(400, invalid or "Invalid request body."))
        return 200, {"input_tokens": count_tokens(parsed.text)}, {"request-id": f"req_fake{self._next_id():020d}"}

    def _tool_use(self, parsed: _Parsed, use: ToolUse) -> tuple[int, Any, dict[str, str]]:
        """An Anthropic Messages reply that asks the client to call a tool (stop_reason "tool_use")."""
        n = self._next_id()
        payload = {
            "id": f"msg_fake{n:020d}",
            "type": "message",
            "role": "assistant",
            "model": parsed.model,
            "content": [{"type": "text", "text": use.text}] * bool(use.text)
            + [{"type": "tool_use", "id": f"toolu_fake{n:020d}", "name": use.name, "input": use.input}],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": count_tokens(parsed.text), "output_tokens": count_tokens(json.dumps(use.input))},
        }
        return 200, payload, {"request-id": f"req_fake{n:020d}"}

    def _tool_call(self, parsed: _Parsed, use: ToolUse) -> tuple[int, Any, dict[str, str]]:
        """A chat completion that asks the client to call a function (finish_reason "tool_calls")."""
        n = self._next_id()
        arguments = json.dumps(use.input)
        call = {"id": f"call_fake{n:020d}", "type": "function", "function": {"name": use.name, "arguments": arguments}}
        input_tokens, output_tokens = count_tokens(parsed.text), count_tokens(arguments)
        payload = {
            "id": f"chatcmpl-fake{n:020d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": parsed.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": use.text or None, "tool_calls": [call]},
                    "finish_reason": "tool_calls",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }
        return 200, payload, {"x-request-id": f"req_fake{n:020d}"}

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _success(self, api: str, parsed: _Parsed, text: str) -> tuple[int, Any, dict[str, str]]:
        n = self._next_id()
        input_tokens = count_tokens(parsed.text)
        truncated = parsed.max_tokens is not None and count_tokens(text) > parsed.max_tokens
        if truncated:
            assert parsed.max_tokens is not None
            text = text[: parsed.max_tokens * 4]
        output_tokens = count_tokens(text)
        if api == "anthropic":
            created, read = self._cache_usage(parsed.cached_prefix)
            payload: dict[str, Any] = {
                "id": f"msg_fake{n:020d}",
                "type": "message",
                "role": "assistant",
                "model": parsed.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "max_tokens" if truncated else "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens - created - read,
                    "output_tokens": output_tokens,
                    "cache_creation_input_tokens": created,
                    "cache_read_input_tokens": read,
                },
            }
            return 200, payload, {"request-id": f"req_fake{n:020d}"}
        if api == "responses":
            return 200, _response_object(n, parsed, text, truncated), {"x-request-id": f"req_fake{n:020d}"}
        payload = {
            "id": f"chatcmpl-fake{n:020d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": parsed.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "length" if truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": input_tokens,
                "completion_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            },
        }
        return 200, payload, {"x-request-id": f"req_fake{n:020d}"}

    def _cache_usage(self, prefix: str) -> tuple[int, int]:
        """(cache_creation_input_tokens, cache_read_input_tokens) for a cacheable prefix."""
        if not self.prompt_cache or not prefix:
            return 0, 0
        tokens = count_tokens(prefix)
        if tokens < self.cache_min_tokens:
            return 0, 0
        with self._lock:
            if prefix in self._cache:
                return 0, tokens
            self._cache.add(prefix)
        return tokens, 0

    def _error(self, api: str, error: ProviderError) -> tuple[int, Any, dict[str, str]]:
        n = self._next_id()
        request_id = f"req_fake{n:020d}"
        headers = dict(error.headers)
        if error.retry_after is not None:
            headers["retry-after"] = f"{error.retry_after:g}"
        if api == "anthropic":
            default_type = "api_error" if error.status >= 500 else "invalid_request_error"
            error_type = error.error_type or _ANTHROPIC_ERROR_TYPES.get(error.status, default_type)
            headers["request-id"] = request_id
            payload: dict[str, Any] = {
                "type": "error",
                "error": {"type": error_type, "message": error.message},
                "request_id": request_id,
            }
            return error.status, payload, headers
        default = ("server_error", None) if error.status >= 500 else ("invalid_request_error", None)
        error_type, code = _OPENAI_ERROR_TYPES.get(error.status, default)
        headers["x-request-id"] = request_id
        payload = {
            "error": {"message": error.message, "type": error.error_type or error_type, "param": None, "code": code}
        }
        return error.status, payload, headers


# ------------------------------------------------------------------------------------- replies and streams


def _response_object(n: int, parsed: _Parsed, text: str, truncated: bool) -> dict[str, Any]:
    """A Responses API ``response`` object, echoing the request's settings the way the real API does."""
    body = parsed.body
    input_tokens, output_tokens = count_tokens(parsed.text), count_tokens(text)
    status = "incomplete" if truncated else "completed"
    message = {
        "id": f"msg_fake{n:020d}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }
    return {
        "id": f"resp_fake{n:020d}",
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if truncated else None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": parsed.model,
        "output": [message],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


Event = tuple[str, dict[str, Any]]


def _pieces(text: str, parts: int = 3) -> list[str]:
    """`text` cut into up to `parts` non-empty deltas, so a client has to join several, as with a real stream."""
    if not text:
        return []
    size = math.ceil(len(text) / parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


def _stream_events(api: str | None, payload: Any) -> list[Event]:
    """The SSE events that carry `payload`, a successful reply of `api`, as its real API streams it."""
    return _anthropic_events(payload) if api == "anthropic" else _responses_events(payload)


def _anthropic_events(message: dict[str, Any]) -> list[Event]:
    """A Messages reply as the API streams it: the message without content, each block started, filled by
    deltas (text_delta, or input_json_delta for tool_use) and stopped, then the stop reason with the final
    usage (cumulative counts, which the SDK lets overwrite those of message_start), then message_stop."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": min(1, usage["output_tokens"])}  # the real API starts at 1
    started = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": start_usage}
    events: list[Event] = [("message_start", {"type": "message_start", "message": started})]
    for index, block in enumerate(message["content"]):
        first: dict[str, Any]
        if block["type"] == "text":
            first = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(block["text"])]
        else:
            first = {**block, "input": {}}
            # The real API opens a tool's input with an empty partial_json; clients must cope with it.
            json_pieces = ["", *_pieces(json.dumps(block["input"]))]
            deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in json_pieces]
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": first}))
        if index == 0:
            events.append(("ping", {"type": "ping"}))  # as the real API sends one early in every stream
        events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    events.append(("message_delta", {"type": "message_delta", "delta": stop, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def _responses_events(response: dict[str, Any]) -> list[Event]:
    """A Responses reply as OpenAI streams it: the response created and in progress (no output, no usage yet),
    each output item added, its text part added, filled by deltas and done, the item done, then the whole
    response (with usage) in response.completed, or response.incomplete if max_output_tokens cut it."""
    sequence = itertools.count()

    def event(name: str, **data: Any) -> Event:
        return name, {"type": name, "sequence_number": next(sequence), **data}

    pending = {**response, "status": "in_progress", "output": [], "usage": None, "incomplete_details": None}
    events = [event("response.created", response=pending), event("response.in_progress", response=pending)]
    for output_index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": output_index}
        events.append(
            event(
                "response.output_item.added",
                output_index=output_index,
                item={**item, "status": "in_progress", "content": []},
            )
        )
        for content_index, part in enumerate(item["content"]):
            at = {**where, "content_index": content_index}
            events.append(event("response.content_part.added", **at, part={**part, "text": ""}))
            events += [
                event("response.output_text.delta", **at, delta=piece, logprobs=[]) for piece in _pieces(part["text"])
            ]
            events.append(event("response.output_text.done", **at, text=part["text"], logprobs=[]))
            events.append(event("response.content_part.done", **at, part=part))
        events.append(event("response.output_item.done", output_index=output_index, item=item))
    final = "response.completed" if response["status"] == "completed" else "response.incomplete"
    events.append(event(final, response=response))
    return events


# ------------------------------------------------------------------------------------- request parsing


def _api_key(headers: Mapping[str, str]) -> str | None:
    if "x-api-key" in headers:
        return headers["x-api-key"]
    authorization = headers.get("authorization")
    if authorization is None:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else authorization


def _content_text(content: Any, where: str) -> str:
    """Text of a message's content: a string, or a list of blocks/parts whose text parts are joined."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _InvalidRequest(f"{where}: Input should be a valid string or list")
    parts: list[str] = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _InvalidRequest(f"{where}.{i}: each content block needs a type")
        if block["type"] == "text":
            if not isinstance(block.get("text"), str):
                raise _InvalidRequest(f"{where}.{i}.text: Field required")
            parts.append(block["text"])
        elif block["type"] == "tool_result":
            inner = block.get("content", "")
            parts.append(_content_text(inner, f"{where}.{i}.content"))
    return "\n".join(parts)


def _model(body: Any) -> str:
    if not isinstance(body, dict):
        raise _InvalidRequest("The request body is not valid JSON.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _InvalidRequest("model: Field required")
    return model


def _stream(body: dict[str, Any]) -> bool:
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _InvalidRequest("stream: Input should be a valid boolean")
    return bool(stream)


def _common(body: Any) -> tuple[str, list[Any]]:
    model = _model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _InvalidRequest("messages: Field required (at least one message)")
    return model, messages


def _last_user(texts: list[tuple[str, str]]) -> str:
    return next((text for role, text in reversed(texts) if role == "user"), "")


def _parse_anthropic(body: Any) -> _Parsed:
    parsed = _parse_count_tokens(body)
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _InvalidRequest("max_tokens: Field required (a positive integer)")
    parsed.max_tokens = max_tokens
    parsed.stream = _stream(body)
    return parsed


def _parse_count_tokens(body: Any) -> _Parsed:
    """A Messages request without max_tokens: what /v1/messages/count_tokens takes (and /v1/messages builds on)."""
    model, messages = _common(body)
    raw_system = body.get("system")
    system: str | None = None
    cached_prefix = ""
    if isinstance(raw_system, str):
        system = raw_system
    elif isinstance(raw_system, list):
        system = _content_text(raw_system, "system")
        seen: list[str] = []
        for block in raw_system:
            if block.get("type") == "text":
                seen.append(block["text"])
                if block.get("cache_control"):
                    cached_prefix = "\n".join(seen)
    elif raw_system is not None:
        raise _InvalidRequest("system: Input should be a valid string or list")
    texts: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _InvalidRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        texts.append((message["role"], _content_text(message.get("content"), f"messages.{i}.content")))
    if texts[0][0] != "user":
        raise _InvalidRequest("messages: first message must use the 'user' role")
    text = (system or "") + "".join(t for _, t in texts)
    return _Parsed(model, system, _last_user(texts), text, None, cached_prefix, body=body)


def _parse_openai(body: Any) -> _Parsed:
    model, messages = _common(body)
    if body.get("stream"):
        raise _InvalidRequest("stream: the fake provider does not stream chat completions; send stream=false")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise _InvalidRequest("max_tokens: must be a positive integer")
    system_parts: list[str] = []
    texts: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise _InvalidRequest(f"messages[{i}].role: invalid value {role!r}")
        content = message.get("content")
        text = "" if content is None else _content_text(content, f"messages[{i}].content")
        if role in ("system", "developer"):
            system_parts.append(text)
        else:
            texts.append((role, text))
    system = "\n".join(system_parts) if system_parts else None
    text = (system or "") + "".join(t for _, t in texts)
    # A tool result answers the assistant's call the way a user message would: it is what the model reacts to.
    prompt = _last_user([("user" if role == "tool" else role, t) for role, t in texts])
    return _Parsed(model, system, prompt, text, max_tokens, body=body)


def _responses_content_text(content: Any, where: str) -> str:
    """Text of a Responses message's content: a string, or parts whose input_text / output_text are joined
    (images and files carry no text the fake counts)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _InvalidRequest(f"{where}: Input should be a valid string or list")
    parts: list[str] = []
    for i, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _InvalidRequest(f"{where}[{i}]: each content part needs a type")
        if part["type"] in ("input_text", "output_text", "text"):
            if not isinstance(part.get("text"), str):
                raise _InvalidRequest(f"{where}[{i}].text: Field required")
            parts.append(part["text"])
        elif part["type"] == "refusal" and isinstance(part.get("refusal"), str):
            parts.append(part["refusal"])
    return "\n".join(parts)


def _parse_responses(body: Any) -> _Parsed:
    """A Responses request: `input` is a string (one user message) or a list of items, messages with a role
    (typed ``{"type": "message", ...}`` or the older bare ``{"role", "content"}``) plus tool items, whose text
    is counted; `instructions` and system/developer messages make the system prompt, as in chat completions."""
    model = _model(body)
    stream = _stream(body)
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise _InvalidRequest("max_output_tokens: must be a positive integer")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _InvalidRequest("instructions: Input should be a valid string")
    raw = body.get("input")
    if isinstance(raw, str):
        items: list[Any] = [{"type": "message", "role": "user", "content": raw}]
    elif isinstance(raw, list) and raw:
        items = raw
    else:
        raise _InvalidRequest("input: Field required (a string or a non-empty list of input items)")
    system_parts = [instructions] if instructions else []
    texts: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _InvalidRequest(f"input[{i}]: Input should be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise _InvalidRequest(f"input[{i}].role: invalid value {role!r}")
            text = _responses_content_text(item.get("content"), f"input[{i}].content")
            if role in ("system", "developer"):
                system_parts.append(text)
            else:
                texts.append((role, text))
        elif kind == "function_call_output":
            texts.append(("tool", _responses_content_text(item.get("output", ""), f"input[{i}].output")))
        elif kind == "function_call":
            texts.append(("assistant", str(item.get("arguments", ""))))
        # Other items (reasoning, item_reference, ...) carry no text the fake counts.
    system = "\n".join(system_parts) if system_parts else None
    text = (system or "") + "".join(t for _, t in texts)
    return _Parsed(model, system, _last_user(texts), text, max_tokens, stream=stream, body=body)


_PARSERS: dict[str, Callable[[Any], _Parsed]] = {
    ANTHROPIC_PATH: _parse_anthropic,
    COUNT_TOKENS_PATH: _parse_count_tokens,
    OPENAI_PATH: _parse_openai,
    RESPONSES_PATH: _parse_responses,
}
