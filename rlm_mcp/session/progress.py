"""Progress of a running cell, for whichever call is waiting for it."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import anyio

log = logging.getLogger(__name__)


ProgressReport = Callable[[float, str], Awaitable[None]]


class CellProgress:
    """Progress of one running cell for the client: a heartbeat, and sub-calls done of each batch.

    MCP wants the progress value to grow with every notification, so it counts notifications; the
    message says what is happening. Batch updates are spaced at least MIN_GAP_S apart (except the last),
    so a 500-prompt batch sends tens of notifications, not 500.
    """

    MIN_GAP_S = 0.2

    def __init__(self, report: ProgressReport | None, interval_s: float) -> None:
        self.report = report  # the call waiting for the cell now; a cell outliving its call gets the next one's
        self.interval_s = interval_s
        self.sent = 0
        self.started = time.monotonic()
        self.last = 0.0  # any notification: a heartbeat is only sent when nothing else was
        self.last_batch = 0.0
        self.sub_calls = 0
        self.batch_done = 0
        self.batch_total = 0

    async def _send(self, message: str) -> None:
        if self.report is None:
            return
        self.sent += 1
        self.last = time.monotonic()
        try:
            await self.report(float(self.sent), message)
        except Exception as exc:  # a client that went away must not fail the cell
            log.debug("progress notification failed: %s", exc)

    async def heartbeat(self) -> None:
        while True:
            await anyio.sleep(self.interval_s)
            if time.monotonic() - self.last >= self.interval_s * 0.9:
                await self._send(
                    f"running for {time.monotonic() - self.started:.0f} s; {self.sub_calls} sub-calls done"
                )

    async def sub_call_done(self, done: int, total: int) -> None:
        self.sub_calls += 1
        self.batch_done, self.batch_total = done, total
        if done == total or time.monotonic() - self.last_batch >= self.MIN_GAP_S:
            self.last_batch = time.monotonic()
            await self._send(f"sub-calls: {done} of {total} done in this batch")
