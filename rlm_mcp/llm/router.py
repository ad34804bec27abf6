"""Where every sub-call goes through: backend choice, window check, budget, concurrency, retries, cache.

One Router per server holds what is shared (the backends and the concurrency limit, since a provider's
rate limit is per key, not per session); one SessionLLM per session holds what is not (budget, cache,
usage, and the budgeted sending of rlm_mcp/llm/sending.py). A batch is fanned out as tasks; each item
succeeds or fails on its own. A backend is anything that has the members of types.Backend, all of which
the router calls directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from rlm_mcp.config import Settings
from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.budget import Budget, Reservation
from rlm_mcp.llm.logins import CliLogin, cli_login, known
from rlm_mcp.llm.pricing import cost_usd, estimate_tokens, price_of
from rlm_mcp.llm.recording import reply_record, sub_call_sha256, turn_sha256
from rlm_mcp.llm.sampling_backend import SamplingBackend, client_offers_sampling
from rlm_mcp.llm.sending import BudgetedSender
from rlm_mcp.llm.types import Backend, ChatBackend, ChatReply, ChatRequest, Completion, SubCall, Turn
from rlm_mcp.memory.answers import StoredAnswer, endpoint_of, key_of
from rlm_mcp.memory.service import Memory
from rlm_mcp.tools.schemas import SubCallUsage
from rlm_mcp.trace import current_tracer

log = logging.getLogger(__name__)

REAP_PERIOD_S = 10.0
NO_BACKEND = (
    "no sub-LLM backend is available. Set ANTHROPIC_API_KEY (Anthropic API); or RLM_MCP_OPENAI_BASE_URL "
    "(any OpenAI-compatible endpoint: Ollama, vLLM, LM Studio, OpenRouter; key in RLM_MCP_OPENAI_API_KEY); or log "
    "in to Claude Code (`claude`, or `claude setup-token` and CLAUDE_CODE_OAUTH_TOKEN in the server's environment) "
    "or to Codex (`codex login`); or use a client that offers MCP sampling. RLM_MCP_BACKEND="
    "auto|anthropic|openai|claude-code|codex|sampling picks one"
)
CLI_BACKENDS = ("claude-code", "codex")


def usage_since(now: SubCallUsage, earlier: SubCallUsage) -> SubCallUsage:
    """What was used between two snapshots of a session's running usage (e.g. by one cell)."""
    return SubCallUsage(**{name: getattr(now, name) - getattr(earlier, name) for name in SubCallUsage.model_fields})


@dataclass(frozen=True)
class Answer:
    """`cache`: which cache answered, "session" or "memory" (the workspace's, across sessions); None if the
    backend did."""

    completion: Completion
    backend: str
    cost_usd: float | None
    cached: bool
    cache: str | None = None


class Router:
    def __init__(self, settings: Settings, memory: Memory | None = None, backend: Backend | None = None) -> None:
        """`memory`: the workspace's memory, whose answer cache serves sub-calls across sessions; `backend`:
        the one backend for every call, instead of choosing by the settings (`rlm-mcp replay` answers from
        a trace this way)."""
        self.settings = settings
        self.memory = memory
        self.fixed = backend
        self.limiter = anyio.CapacityLimiter(settings.max_concurrency)
        self._backends: dict[str, Backend] = {}
        self._building = anyio.Lock()

    async def backend_for(self, client_session: Any | None) -> Backend:
        """The backend for a call made while serving `client_session` (needed for sampling)."""
        if self.fixed is not None:
            return self.fixed
        mode = self.settings.backend
        if mode == "auto":
            mode = await self._auto_mode(client_session)
        if mode == "sampling":
            if client_session is None or not client_offers_sampling(client_session):
                raise SubCallError(
                    "RLM_MCP_BACKEND=sampling, but this client did not offer MCP sampling; " + NO_BACKEND,
                    kind="no_backend",
                )
            return SamplingBackend(client_session)
        if mode in self._backends:
            return self._backends[mode]
        async with self._building:  # one build per backend, however many batches ask at once
            if mode not in self._backends:
                self._backends[mode] = await anyio.to_thread.run_sync(self._build, mode)
        return self._backends[mode]

    async def _auto_mode(self, client_session: Any | None) -> str:
        """An API key, then an OpenAI-compatible URL, then a logged-in Claude Code, then Codex, then sampling."""
        if os.environ.get("ANTHROPIC_API_KEY"):
            return "anthropic"
        if self.settings.openai_base_url:
            return "openai"
        for name in CLI_BACKENDS:
            if (await self.login(name)).logged_in:
                return name
        if client_session is not None and client_offers_sampling(client_session):
            return "sampling"
        raise SubCallError(NO_BACKEND, kind="no_backend")

    async def login(self, name: str) -> CliLogin:
        """Whether the `name` CLI is installed and logged in (asked once, in a thread)."""
        command = self._cli_command(name)
        return known(name, command) or await anyio.to_thread.run_sync(cli_login, name, command, dict(os.environ))

    def _cli_command(self, name: str) -> str:
        return self.settings.claude_command if name == "claude-code" else self.settings.codex_command

    def limiter_for(self, backend: Backend) -> anyio.CapacityLimiter:
        """A CLI backend has a cap of its own (each call is a process); the API backends share the server's."""
        own = backend.limiter
        return self.limiter if own is None else own

    async def prepare(self) -> None:
        """Build the configured backend now, in a thread, so that a session's first batch does not wait for
        it (importing the anthropic SDK alone takes about a second; asking a CLI for its login a quarter).
        Sampling needs a client session and is built per call; a backend that cannot be built is left for
        the first call to report."""
        with contextlib.suppress(SubCallError):
            await self.backend_for(None)

    async def maintain(self) -> None:
        """Stop the CLI processes started ahead of need that no call took (see cli_process)."""
        while True:
            await anyio.sleep(REAP_PERIOD_S)
            for backend in list(self._backends.values()):
                backend.reap()

    def _build(self, mode: str) -> Backend:
        """Blocking (imports an SDK, or asks a CLI for its login): run in a thread."""
        settings = self.settings
        if mode == "anthropic":
            if not os.environ.get("ANTHROPIC_API_KEY"):
                raise SubCallError("RLM_MCP_BACKEND=anthropic needs ANTHROPIC_API_KEY", kind="no_backend")
            from rlm_mcp.llm.anthropic_backend import AnthropicBackend

            return AnthropicBackend(settings.max_concurrency)
        if mode in CLI_BACKENDS:
            login = cli_login(mode, self._cli_command(mode), dict(os.environ))
            if not login.logged_in or login.path is None:
                raise SubCallError(f"the {mode} backend cannot be used: {login.detail}", kind="no_backend")
            if mode == "claude-code":
                from rlm_mcp.llm.claude_code_backend import ClaudeCodeBackend

                return ClaudeCodeBackend(login.path, settings.cli_concurrency, login.subscription)
            from rlm_mcp.llm.codex_backend import CodexBackend

            return CodexBackend(login.path, settings.cli_concurrency, login.subscription)
        if not settings.openai_base_url:
            raise SubCallError("RLM_MCP_BACKEND=openai needs RLM_MCP_OPENAI_BASE_URL", kind="no_backend")
        from rlm_mcp.llm.openai_backend import OpenAIBackend

        return OpenAIBackend(settings.openai_base_url, settings.openai_api_key, settings.max_concurrency)

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()


class SessionLLM:
    """A session's sub-calls: its cache of answers, and its budget and running usage (kept by its sender)."""

    def __init__(self, router: Router, budget: Budget | None = None) -> None:
        """`budget`: a child RLM's share of its parent's; by default the server's per-session limits."""
        self.router = router
        settings = router.settings
        self.settings = settings
        budget = budget or Budget(settings.max_sub_calls, settings.max_sub_tokens, settings.max_cost_usd)
        self.sender = BudgetedSender(settings, budget, router.limiter_for)
        self._cache: dict[tuple[str, str, str | None, str, int], Answer] = {}

    @property
    def budget(self) -> Budget:
        return self.sender.budget

    @property
    def usage(self) -> SubCallUsage:
        """Running totals for the session."""
        return self.sender.usage

    @property
    def usage_by_model(self) -> dict[str, SubCallUsage]:
        return self.sender.usage_by_model

    def make_call(self, backend: Backend, prompt: str, system: str | None, model: str | None, max_tokens: int | None):
        chosen = model or self.settings.sub_model or backend.default_model or "client"
        return SubCall(prompt, system, chosen, max_tokens or self.settings.sub_max_tokens)

    def _most_it_may_cost(self, backend: Backend, specs: list[dict[str, Any]]) -> float | None:
        """The batch's cost if every answer ran to max_tokens; None if a model has no known price."""
        total = 0.0
        for spec in specs:
            call = self.make_call(
                backend, spec["prompt"], spec.get("system"), spec.get("model"), spec.get("max_tokens")
            )
            price = price_of(call.model, self.router.settings.prices)
            cost = cost_usd(price, estimate_tokens(call.prompt, call.system), call.max_tokens)
            if cost is None:
                return None
            total += cost
        return total

    async def batch(
        self,
        specs: list[dict[str, Any]],
        client_session: Any | None,
        on_done: Callable[[int, int], Awaitable[None]] | None = None,
        confirm: bool = False,
    ) -> list[dict[str, Any]]:
        """Run sub-calls concurrently; results come back in input order, failures as error entries.

        A batch that cannot start at all (no backend, the budget already spent) raises SubCallError once,
        rather than answering every prompt with the same error; so does one that may cost more than
        --confirm-batch-usd, unless `confirm`. `on_done(done, total)` is awaited as each call finishes (for
        progress notifications).
        """
        finished = [0]
        results: list[dict[str, Any]] = [{} for _ in specs]
        backend = await self.router.backend_for(client_session)
        spent = self.budget.exhausted()
        if spent is not None:
            raise SubCallError(spent, kind="budget")
        limit = self.router.settings.confirm_batch_usd
        estimate = self._most_it_may_cost(backend, specs) if limit is not None and not confirm else None
        if limit is not None and estimate is not None and estimate > limit:
            raise SubCallError(
                f"this batch of {len(specs):,} sub-calls may cost up to ${estimate:.2f} (the prompts as sent, every "
                f"answer at its max_tokens), over --confirm-batch-usd (${limit:.2f}); run it with "
                "confirm=True, or send fewer or shorter prompts",
                kind="confirm",
            )

        # Admitted in the batch's order before any is sent: which calls fit the budget depends on the
        # prompts, never on which of them happen to answer first.
        admitted: list[tuple[SubCall, Reservation | SubCallError]] = []
        for spec in specs:
            call = self.make_call(
                backend, spec["prompt"], spec.get("system"), spec.get("model"), spec.get("max_tokens")
            )
            try:
                prompt_tokens = estimate_tokens(call.system, call.prompt)
                admitted.append((call, self.sender.reserve(call.model, prompt_tokens, call.max_tokens)))
            except SubCallError as exc:  # still answered if the session's cache holds it; else this error
                admitted.append((call, exc))

        async def one(index: int, entry: tuple[SubCall, Reservation | SubCallError]) -> None:
            try:
                answer = await self.complete(entry[0], backend, entry[1])
            except SubCallError as exc:
                results[index] = {"ok": False, "error": str(exc), "kind": exc.kind}
            else:
                results[index] = {
                    "ok": True,
                    "text": answer.completion.text,
                    "model": answer.completion.model,
                    "cached": answer.cached,
                }
            finished[0] += 1
            if on_done is not None:
                await on_done(finished[0], len(specs))

        async with anyio.create_task_group() as group:
            for index, entry in enumerate(admitted):
                group.start_soon(one, index, entry)
        return results

    async def complete(
        self, call: SubCall, backend: Backend, admission: Reservation | SubCallError | None = None
    ) -> Answer:
        """One sub-call, traced under whatever cell or tool call made it. `admission`: its budget when the
        caller reserved it already, or why the budget refused it (a batch admits its calls in order before
        sending any); a refused call is still answered from the session's caches."""
        tracer = current_tracer()
        recording = tracer.event("sub_call", call.model, model=call.model, backend=backend.name) if tracer else None
        with recording or contextlib.nullcontext() as event:
            if event is not None:
                event.set(prompt=call.prompt, system=call.system, max_tokens=call.max_tokens)
                event.set(requested_model=call.model, request_sha256=sub_call_sha256(call))
            attempts = [0]
            try:
                answer = await self._complete(call, backend, attempts, admission)
            except SubCallError as exc:
                self.sender.failed(call.model, exc, event, attempts[0])
                raise
            if event is not None:
                completion = answer.completion
                event.set(
                    answer=completion.text,
                    model=completion.model,
                    input_tokens=completion.input_tokens,
                    output_tokens=completion.output_tokens,
                    cost_usd=answer.cost_usd,
                    cached=answer.cached,
                    cache=answer.cache,  # a replay answers a session-cache hit from its own cache again
                    attempts=attempts[0],
                    subscription=completion.subscription,  # cost_usd is then the API price, not a charge
                )
            return answer

    async def _complete(
        self, call: SubCall, backend: Backend, attempts: list[int], admission: Reservation | SubCallError | None
    ) -> Answer:
        key = (backend.name, call.model, call.system, call.prompt, call.max_tokens)
        cached = self._cache.get(key)
        if cached is not None and isinstance(admission, Reservation):
            self.budget.settle(admission, 0, None)  # answered from the cache: it costs nothing
        if cached is not None:
            self.sender.cache_hit(call.model)
            return Answer(cached.completion, cached.backend, 0.0, cached=True, cache="session")

        memory = self.router.memory
        endpoint = endpoint_of(backend.name, self.settings)  # one model name at two endpoints is two models
        stored_key = key_of(*key, endpoint=endpoint) if memory is not None and backend.name != "sampling" else None
        if memory is not None and stored_key is not None:
            stored = await memory.stored_answer(stored_key)
            if stored is not None:  # an earlier session paid for this very call
                if isinstance(admission, Reservation):
                    self.budget.settle(admission, 0, None)
                self.sender.cache_hit(call.model)
                completion = Completion(stored.text, stored.model, stored.input_tokens, stored.output_tokens)
                answer = Answer(completion, backend.name, 0.0, cached=True, cache="memory")
                self._cache[key] = answer
                return answer

        if isinstance(admission, SubCallError):
            raise admission
        completion, cost = await self.sender.send(
            call.model,
            estimate_tokens(call.system, call.prompt),
            call.max_tokens,
            lambda: backend.complete(call, self.settings.sub_timeout_s),
            backend,
            attempts,
            admission,
        )
        answer = Answer(completion, backend.name, cost, cached=False)
        self._cache[key] = answer
        if memory is not None and stored_key is not None:
            kept = StoredAnswer(completion.text, completion.model, completion.input_tokens, completion.output_tokens)
            await memory.keep_answer(stored_key, kept)
        return answer

    async def chat(self, request: ChatRequest, backend: ChatBackend) -> tuple[ChatReply, float | None]:
        """One turn of a root model (a child RLM's, or `ask`'s): budgeted, retried and traced like a sub-call.
        Returns the reply and its cost (None when the model has no known price)."""
        tracer = current_tracer()
        recording = (
            tracer.event("root_call", request.model, model=request.model, backend=backend.name) if tracer else None
        )
        with recording or contextlib.nullcontext() as event:
            if event is not None:
                event.set(turn_sha256=turn_sha256(request))
            attempts = [0]
            estimate = estimate_tokens(request.system, *(_turn_text(turn) for turn in request.turns))
            try:
                reply, cost = await self.sender.send(
                    request.model,
                    estimate,
                    request.max_tokens,
                    lambda: backend.chat(request, self.settings.sub_timeout_s),
                    backend,
                    attempts,
                )
            except SubCallError as exc:
                self.sender.failed(request.model, exc, event, attempts[0])
                raise
            if event is not None:
                event.set(
                    answer=reply.text,
                    tool_calls=[call.name for call in reply.calls],
                    input_tokens=reply.input_tokens,
                    output_tokens=reply.output_tokens,
                    cost_usd=cost,
                    attempts=attempts[0],
                    reply=reply_record(reply),
                )
            return reply, cost


def _turn_text(turn: Turn) -> str:
    """What a turn puts in the model's input, for the window check and the budget's estimate."""
    parts = [turn.text, *(json.dumps(call.arguments) for call in turn.calls), *(r.text for r in turn.results)]
    return "".join(parts)
