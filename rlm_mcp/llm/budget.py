"""A session's sub-call budget, reserved before dispatch.

Each call reserves its worst case (estimated input plus max_tokens) before it is sent and settles to its
real usage afterwards. Because reservations count against the limits, any number of concurrent calls can
never together overshoot a budget: the call that would cross a limit is refused before it costs anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlm_mcp.llm.types import SubCallError

# Dollars are summed as floats, and 0.1 + 0.1 + 0.1 > 0.3: a sum this close to the limit is at it, not past.
COST_TOLERANCE_USD = 1e-9


@dataclass
class Reservation:
    tokens: int
    cost: float


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

    def settle(self, reservation: Reservation, tokens: int, cost: float | None) -> None:
        """Replace a reservation by what the call really used (nothing, if it failed)."""
        self._reserved_tokens -= reservation.tokens
        self._reserved_cost -= reservation.cost
        self.tokens += tokens
        self.cost += cost or 0.0
