"""A session's sub-call budget, reserved before dispatch.

Each call reserves its worst case (estimated input plus max_tokens) before it is sent and settles to its
real usage afterwards. Because reservations count against the limits, any number of concurrent calls can
never together overshoot a budget: the call that would cross a limit is refused before it costs anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlm_mcp.errors import SubCallError

# Dollars are summed as floats, and 0.1 + 0.1 + 0.1 > 0.3: a sum this close to the limit is at it, not past.
COST_TOLERANCE_USD = 1e-9


@dataclass
class Reservation:
    tokens: int
    cost: float
    calls: int = 1


@dataclass(frozen=True)
class Share:
    """Part of a budget's remainder, handed to a child RLM as its whole budget (None: no limit)."""

    calls: int
    tokens: int | None
    cost: float | None


@dataclass
class Budget:
    max_calls: int
    max_tokens: int | None
    max_cost: float | None
    calls: int = 0
    tokens: int = 0
    cost: float = 0.0
    _reserved_tokens: int = 0
    _reserved_cost: float = 0.0

    def spent(self) -> str:
        money = f", ${self.cost:.4f}" if self.max_cost is not None or self.cost else ""
        return f"{self.calls:,} sub-calls, {self.tokens:,} tokens{money} spent so far this session"

    def exhausted(self) -> str | None:
        """Why no further call can be admitted at all, or None: a batch then fails once, not per prompt."""
        if self.calls >= self.max_calls:
            return f"sub-call budget exhausted: {self.spent()} (limit {self.max_calls:,} calls, RLM_MCP_MAX_SUB_CALLS)"
        if self.max_tokens is not None and self.tokens + self._reserved_tokens >= self.max_tokens:
            return f"token budget exhausted: {self.spent()} (limit {self.max_tokens:,}, RLM_MCP_MAX_SUB_TOKENS)"
        if self.max_cost is not None and self.cost + self._reserved_cost >= self.max_cost - COST_TOLERANCE_USD:
            return f"money budget exhausted: {self.spent()} (limit ${self.max_cost:.4f}, RLM_MCP_MAX_COST_USD)"
        return None

    def reserve(self, tokens: int, cost: float | None) -> Reservation:
        if self.calls >= self.max_calls:
            raise SubCallError(
                f"sub-call budget exhausted: {self.spent()} (limit {self.max_calls:,} calls, RLM_MCP_MAX_SUB_CALLS)",
                kind="budget",
            )
        if self.max_tokens is not None and self.tokens + self._reserved_tokens + tokens > self.max_tokens:
            raise SubCallError(
                f"token budget exhausted: this call may use up to {tokens:,} tokens; {self.spent()} "
                f"(limit {self.max_tokens:,}, RLM_MCP_MAX_SUB_TOKENS)",
                kind="budget",
            )
        if self.max_cost is not None:
            if cost is None:
                raise SubCallError(
                    "this model has no known price, so a dollar budget cannot be enforced; add it to "
                    'RLM_MCP_PRICES (e.g. {"my-model": [0.5, 1.5]}) or unset RLM_MCP_MAX_COST_USD',
                    kind="budget",
                )
            if self.cost + self._reserved_cost + cost > self.max_cost + COST_TOLERANCE_USD:
                raise SubCallError(
                    f"money budget exhausted: this call may cost up to ${cost:.4f}; {self.spent()} "
                    f"(limit ${self.max_cost:.4f}, RLM_MCP_MAX_COST_USD)",
                    kind="budget",
                )
        self.calls += 1
        self._reserved_tokens += tokens
        self._reserved_cost += cost or 0.0
        return Reservation(tokens, cost or 0.0)

    def share(self, parts: int) -> Share | None:
        """One of `parts` equal shares of what is left, or None when a share would hold no call at all."""
        calls = (self.max_calls - self.calls) // parts
        if calls < 1 or self.exhausted() is not None:
            return None
        tokens = None if self.max_tokens is None else (self.max_tokens - self.tokens - self._reserved_tokens) // parts
        cost = None if self.max_cost is None else (self.max_cost - self.cost - self._reserved_cost) / parts
        return Share(calls, tokens, cost)

    def hold(self, share: Share) -> Reservation:
        """Reserve a child's whole share before it starts, so siblings cannot together overspend."""
        self.calls += share.calls
        self._reserved_tokens += share.tokens or 0
        self._reserved_cost += share.cost or 0.0
        return Reservation(share.tokens or 0, share.cost or 0.0, share.calls)

    def settle(self, reservation: Reservation, tokens: int, cost: float | None, calls: int | None = None) -> None:
        """Replace a reservation by what was really used (nothing, if a call failed); `calls` for a child's
        share (a single call counts as one, answered or not)."""
        if calls is not None:
            self.calls -= reservation.calls - calls
        self._reserved_tokens -= reservation.tokens
        self._reserved_cost -= reservation.cost
        self.tokens += tokens
        self.cost += cost or 0.0
