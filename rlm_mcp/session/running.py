"""A cell that outlives the tool call that started it.

Hosts give up on a tool call long before a real RLM cell is done (Claude Code moves calls past 120 s to
the background and may then drop their result), so `run_code` waits only `wait_s` and then answers
`running`. The cell itself runs in a task owned by the server, not by the call: a call that returns, is
cancelled by a disconnect, or times out in the host leaves it running, and its result waits in the
session until a later call takes it. Only an explicit stop (the client's notifications/cancelled while
it waits, or run_code(interrupt=True)) interrupts it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from rlm_mcp.tools.schemas import RunResult

if TYPE_CHECKING:
    from rlm_mcp.session.progress import CellProgress

Spawn = Callable[[Callable[[], Awaitable[None]]], None]


class RunningCell:
    """One cell running in the background, and once done, its result until a call takes it."""

    def __init__(self, number: int, progress: CellProgress) -> None:
        self.number = number
        self.progress = progress
        self.started = time.monotonic()
        self.result: RunResult | None = None
        self.failure: Exception | None = None
        self.stopping = False  # an interrupt was sent
        self.waiters = 0  # calls waiting for the result: the first of them takes it
        self._done = anyio.Event()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    async def run(self, work: Callable[[], Awaitable[RunResult]]) -> None:
        try:
            self.result = await work()
        except Exception as exc:  # kept for the call that takes the result
            self.failure = exc
        finally:
            self._done.set()

    async def wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for the cell to finish; whether it has."""
        with anyio.move_on_after(seconds):
            await self._done.wait()
        return self.done

    def outcome(self) -> RunResult:
        """The finished cell's result (raising what it raised)."""
        if self.failure is not None:
            raise self.failure
        assert self.result is not None
        return self.result

    def status(self) -> str:
        """Where the cell is, in a few words, for the model and for progress messages."""
        progress = self.progress
        parts = [f"cell {self.number} running for {self.elapsed_s:.0f} s"]
        if progress.sub_calls:
            parts.append(f"{progress.sub_calls:,} sub-calls done")
        if progress.batch_total:
            parts.append(f"{progress.batch_done:,} of {progress.batch_total:,} in the current batch")
        return ", ".join(parts)
