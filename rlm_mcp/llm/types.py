"""The vocabulary shared by the backends and the router."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class SubCall:
    prompt: str
    system: str | None
    model: str
    max_tokens: int


@dataclass(frozen=True)
class Completion:
    """`cost_usd`: what the backend itself reported (CLIs do), else the router prices the tokens;
    `subscription`: the call ran on a subscription login, so that cost is the API price of its tokens, not a charge."""

    text: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = None
    subscription: bool = False


class SubCallError(Exception):
    """A sub-call that did not produce an answer. `retryable` errors may succeed if sent again later."""

    def __init__(self, message: str, *, kind: str, retryable: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.status = status


class Backend(Protocol):
    name: str
    default_model: str | None

    async def complete(self, call: SubCall, timeout_s: float) -> Completion: ...
