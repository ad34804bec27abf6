"""The vocabulary shared by the backends and the router."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeGuard, runtime_checkable

import anyio


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


@runtime_checkable
class Backend(Protocol):
    """Everything the router asks of a backend, so it calls each member directly.

    `default_model`: the model of a call that names none (None: the provider chooses); `limiter`: a cap of
    the backend's own on its calls in flight (a CLI backend's calls are processes), or None for the server's
    shared cap; `reap`: stop what it started ahead of need that no call took (called every few seconds);
    `aclose`: release its connections and processes when the server stops.
    """

    name: str
    default_model: str | None

    @property
    def limiter(self) -> anyio.CapacityLimiter | None: ...

    async def complete(self, call: SubCall, timeout_s: float) -> Completion: ...

    def reap(self) -> None: ...

    async def aclose(self) -> None: ...


class BaseBackend:
    """The members of Backend that most backends have nothing behind: no cap of their own, nothing started
    ahead of need, nothing held open. A backend that has one overrides it."""

    limiter: anyio.CapacityLimiter | None = None

    def reap(self) -> None:
        """Nothing started ahead of need: nothing to stop."""

    async def aclose(self) -> None:
        """Nothing held open: nothing to release."""


# -- tool use, for the root model of a child RLM and of `rlm-mcp ask` (see rlm_mcp/engine) -------------


@dataclass(frozen=True)
class Tool:
    """A tool offered to a root model: its name, what it does, and a JSON schema of its arguments."""

    name: str
    description: str
    schema: dict[str, object]


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, object]


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    text: str
    is_error: bool = False


@dataclass(frozen=True)
class Turn:
    """One message of a conversation with tools, in no provider's format: a user's text, the assistant's
    text and tool calls, or the results of those calls (which the next turn answers)."""

    role: str  # "user", "assistant" or "tool"
    text: str = ""
    calls: tuple[ToolCall, ...] = ()
    results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True)
class ChatRequest:
    system: str
    turns: tuple[Turn, ...]
    tools: tuple[Tool, ...]
    model: str
    max_tokens: int


@dataclass(frozen=True)
class ChatReply:
    """What the model said: text, the tools it wants called (none: it has answered), and its usage."""

    text: str
    calls: tuple[ToolCall, ...]
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None = None
    subscription: bool = False


@runtime_checkable
class ChatBackend(Backend, Protocol):
    """A backend that can drive a root model: a conversation with tools."""

    async def chat(self, request: ChatRequest, timeout_s: float) -> ChatReply: ...


def can_chat(backend: Backend) -> TypeGuard[ChatBackend]:
    """Whether `backend` can drive a root model (a child RLM's, or `ask`'s): it declares ChatBackend's `chat`."""
    return isinstance(backend, ChatBackend)
