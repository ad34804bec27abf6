"""Budgeted sending: a session's budget and running usage, and how one call is sent against them.

A call's worst case (its prompt and max_tokens) is held against the budget once it is known to fit the
model's window; the call is sent under its backend's concurrency cap, sent again with backoff while its
error is retryable, and what it used is settled with the budget and counted for the session and its model.
SessionLLM (router.py) decides what to send, after its caches; this module sends it and keeps the accounts,
a failure's included, the same way for a sub-call and for a root model's turn.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from rlm_mcp.config import Settings
from rlm_mcp.errors import SubCallError
from rlm_mcp.llm.budget import Budget, Reservation
from rlm_mcp.llm.pricing import cost_usd, price_of, window_of
from rlm_mcp.llm.types import Backend, ChatReply, Completion
from rlm_mcp.tools.schemas import SubCallUsage
from rlm_mcp.trace import Event

log = logging.getLogger(__name__)

MAX_RETRY_DELAY_S = 30.0
Used = TypeVar("Used", Completion, ChatReply)


class BudgetedSender:
    """One session's accounts (budget, usage in total and by model) and the sending that fills them."""

    def __init__(
        self, settings: Settings, budget: Budget, limiter_for: Callable[[Backend], anyio.CapacityLimiter]
    ) -> None:
        """`limiter_for`: the cap a backend's calls run under (the router's: its own, or the server's)."""
        self.settings = settings
        self.budget = budget
        self.usage = SubCallUsage()  # running totals for the session
        self.usage_by_model: dict[str, SubCallUsage] = {}
        self._limiter_for = limiter_for

    def model_usage(self, model: str) -> SubCallUsage:
        return self.usage_by_model.setdefault(model, SubCallUsage())

    def cache_hit(self, model: str) -> None:
        """A call answered from a cache: counted as a hit, at no cost."""
        self.usage.cache_hits += 1
        self.model_usage(model).cache_hits += 1

    def failed(self, model: str, error: SubCallError, event: Event | None, attempts: int) -> None:
        """A call that gave no answer (a sub-call or a root model's turn): counted for the session and its
        model, and its trace event says why and after how many attempts."""
        self.usage.failures += 1
        self.model_usage(model).failures += 1
        if event is not None:
            event.set(error=str(error), kind=error.kind, attempts=attempts)

    def reserve(self, model: str, estimated_input: int, max_tokens: int) -> Reservation:
        """A call's worst case held against the budget, once it is known to fit the model's window."""
        window = window_of(model, self.settings.sub_window_tokens)
        if estimated_input + max_tokens > window:
            raise SubCallError(
                f"the prompt is about {estimated_input:,} tokens; with max_tokens {max_tokens:,} it exceeds "
                f"the {window:,}-token window of {model}. Split the text (e.g. into chunks) and query each part",
                kind="window",
            )
        price = price_of(model, self.settings.prices)
        return self.budget.reserve(estimated_input + max_tokens, cost_usd(price, estimated_input, max_tokens))

    async def send(
        self,
        model: str,
        estimated_input: int,
        max_tokens: int,
        send: Callable[[], Awaitable[Used]],
        backend: Backend,
        attempts: list[int],
        reservation: Reservation | None = None,
    ) -> tuple[Used, float | None]:
        """Send a call within the window and the budget (reserved here, unless the caller did), retrying, and
        count what it used. Returns the reply and its cost (None when the model has no known price)."""
        if reservation is None:
            reservation = self.reserve(model, estimated_input, max_tokens)
        price = price_of(model, self.settings.prices)
        self.usage.calls += 1
        by_model = self.model_usage(model)
        by_model.calls += 1
        reply: Used | None = None
        cost: float | None = None
        try:
            reply = await self._attempts(send, model, backend, attempts)
            cost = reply.cost_usd
            if cost is None:
                cost = cost_usd(price, reply.input_tokens, reply.output_tokens)
        finally:
            used = reply.input_tokens + reply.output_tokens if reply else 0
            self.budget.settle(reservation, used, cost)
        for usage in (self.usage, by_model):
            usage.input_tokens += reply.input_tokens
            usage.output_tokens += reply.output_tokens
            usage.cost_usd += cost or 0.0
            if reply.subscription:
                usage.subscription_usd += cost or 0.0
        return reply, cost

    async def _attempts(
        self, send: Callable[[], Awaitable[Used]], model: str, backend: Backend, attempts: list[int]
    ) -> Used:
        settings = self.settings
        for attempt in range(settings.sub_retries + 1):
            attempts[0] = attempt + 1
            try:
                async with self._limiter_for(backend):
                    with anyio.fail_after(settings.sub_timeout_s + 5):
                        return await send()
            except TimeoutError:
                error = SubCallError(f"no answer within {settings.sub_timeout_s:g} s", kind="timeout", retryable=True)
            except SubCallError as exc:
                error = exc
            if not error.retryable or attempt == settings.sub_retries:
                if attempt:
                    raise SubCallError(f"{error} (after {attempt + 1} attempts)", kind=error.kind) from None
                raise error
            delay = min(MAX_RETRY_DELAY_S, settings.retry_base_s * 2**attempt) * random.uniform(0.5, 1.5)
            log.info("sub-call to %s failed (%s); retry %d in %.2f s", model, error, attempt + 1, delay)
            await anyio.sleep(delay)
        raise AssertionError("unreachable")
