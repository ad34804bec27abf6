"""A session's record of what happened: one event per tool call, per cell and per sub-call, as a tree.

Appended as JSON Lines to `trace.jsonl` in the session's directory, one line per finished event, so a
crash loses at most the events still running and the file can be read while the session goes on. Each
event has an `id`, the `parent` it ran under (a sub-call under the cell whose code made it, a cell under
its run_code call) and its `depth`; the parent is carried in a context variable, so the router, which knows
nothing of cells, still files its sub-calls in the right place.

Schema version 1 (`"v": 1` on every line); fields by `type`:
- every event: v, id, parent, depth, type, name, started (Unix time), elapsed_s, error (text or null)
- "tool": name = the tool, arguments (long values shortened), outcome
- "cell": code (shortened to 100,000 characters), stdout, stderr (heads, shortened), result, outcome, state
- "sub_call": model (the model that answered), requested_model (the one asked for), backend, prompt, system,
  max_tokens, answer (shortened to 100,000 characters, the other texts to 4,000), request_sha256 (of the JSON
  of [system, prompt, max_tokens]: what `rlm-mcp replay` answers it by), input_tokens, output_tokens,
  cost_usd (null when the model's price is unknown), cached (with cache: "session" or "memory", which one
  answered), attempts, latency_s; on failure error and kind
- "rlm": a child RLM (under the cell whose rlm_query started it) or an `rlm-mcp ask` run: prompt, level
  (its recursion depth, the client's model being 1), outcome (how it stopped), answer, iterations; its
  session's tool calls, cells and sub-calls are its children
- "root_call": one turn of a root model driven by the server: model, backend, answer, tool_calls (names),
  input_tokens, output_tokens, cost_usd, attempts; for replay also turn_sha256 (the conversation so far
  without the times its tool results report, the system prompt without the memory's part, tools and
  max_tokens: what a replay of the same session asks again) and reply ({"text", "calls": [{"id", "name",
  "arguments"}]}, left out when its JSON passes 100,000 characters); see rlm_mcp/llm/recording.py
Once the file passes 256 MiB, events keep coming but without their texts, and `texts_dropped` lists which.
Consumers must ignore fields they do not know; a change that removes or renames a field bumps `v`.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlm_mcp import safefs, telemetry
from rlm_mcp.units import MiB

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
TEXT_LIMIT = 4_000
# Past this size a trace keeps recording every event, but without its texts (code, output, prompts, answers),
# so a session of a million sub-calls cannot fill the disk with its own record.
FULL_TEXT_BYTES = 256 * MiB
RESUME_TAIL_BYTES = 4 * MiB  # read to find where a resumed session's numbering goes on
TEXT_FIELDS = ("code", "stdout", "stderr", "result", "prompt", "system", "answer", "arguments", "reply")
# Replay (rlm-mcp replay) re-runs a cell's code and answers its sub-calls from the trace, so those two texts
# are kept whole up to a limit few reach; every other text is for reading and is kept to TEXT_LIMIT.
REPLAY_LIMIT = 100_000
LIMITS = {"code": REPLAY_LIMIT, "answer": REPLAY_LIMIT}
_MARKER = re.compile(r"\.\.\. \[[0-9,]+ more characters\]")

MAX_LINE_BYTES = 4 * MiB  # a longer line than this when reading a trace is forged: the tracer's are far shorter
BATCH_BYTES = MAX_LINE_BYTES + 1  # of a trace read at once: a line of MAX_LINE_BYTES and its newline

_parent: contextvars.ContextVar[tuple[Tracer, int, int] | None] = contextvars.ContextVar("rlm_trace", default=None)


def shorten(text: Any, limit: int = TEXT_LIMIT) -> Any:
    if not isinstance(text, str) or len(text) <= limit:
        return text
    return text[:limit] + f"... [{len(text) - limit:,} more characters]"


def was_shortened(text: str) -> bool:
    """Whether a text a trace holds is `shorten`'s cut of a longer one, at any of the limits (replay cannot
    use it then)."""
    return any(len(text) > limit and _MARKER.fullmatch(text, limit) for limit in {TEXT_LIMIT, *LIMITS.values()})


class Event:
    """An event being recorded; fields can be added until it ends."""

    def __init__(self, tracer: Tracer, event_id: int, parent: int | None, depth: int, kind: str, name: str) -> None:
        self.fields: dict[str, Any] = {
            "v": SCHEMA_VERSION,
            "id": event_id,
            "parent": parent,
            "depth": depth,
            "type": kind,
            "name": name,
            "started": time.time(),
            "error": None,
        }
        self.tracer = tracer
        self._clock = time.perf_counter()

    def set(self, **fields: Any) -> None:
        self.fields.update({key: shorten(value, LIMITS.get(key, TEXT_LIMIT)) for key, value in fields.items()})

    def finish(self) -> None:
        self.fields["elapsed_s"] = round(time.perf_counter() - self._clock, 6)
        self.tracer.write(self.fields)


class Tracer:
    def __init__(self, path: Path, full_text_bytes: int = FULL_TEXT_BYTES) -> None:
        self.path = path
        self.full_text_bytes = full_text_bytes
        self._ids = itertools.count(self._next_id())
        self._lock = threading.Lock()
        try:
            self._size = os.lstat(path).st_size
        except OSError:
            self._size = 0

    def _next_id(self) -> int:
        """Continue the numbering of an existing trace (a resumed session appends to it): past the largest id
        near its end, not the last line's, since a parent's line comes after its children's (it ends later)
        and has the smallest id of them."""
        try:
            tail = safefs.read_tail(self.path, RESUME_TAIL_BYTES)
        except OSError:
            return 1
        largest = 0
        for line in tail.splitlines()[1:] if len(tail) == RESUME_TAIL_BYTES else tail.splitlines():
            try:
                event_id = json.loads(line)["id"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(event_id, int) and not isinstance(event_id, bool):
                largest = max(largest, event_id)
        return largest + 1

    def write(self, fields: dict[str, Any]) -> None:
        if self._size >= self.full_text_bytes:
            dropped = [name for name in TEXT_FIELDS if fields.get(name) is not None]
            fields = {key: value for key, value in fields.items() if key not in dropped}
            if dropped:
                fields["texts_dropped"] = dropped  # the trace passed its size for full texts
        line = json.dumps(fields, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self._size += len(line.encode("utf-8"))
            try:
                safefs.private_dir(self.path.parent)
                descriptor = safefs.open_append(self.path)  # never a link, a FIFO or a device
                try:
                    os.write(descriptor, line.encode("utf-8"))
                finally:
                    os.close(descriptor)
            except OSError as exc:  # a full disk must not fail the call being traced
                log.warning("could not write the trace %s: %s", self.path, exc)
        exporter = telemetry.active()
        if exporter is not None:
            try:
                exporter.export(self.path.parent.name, fields)
            except Exception as exc:  # an exporter's failure must not fail the call being traced either
                log.warning("could not export a span of %s: %s", self.path, exc)

    @contextlib.contextmanager
    def event(self, kind: str, name: str, **fields: Any) -> Iterator[Event]:
        """Record an event around a block; events started inside it (in this task) become its children."""
        current = _parent.get()
        parent, depth = (current[1], current[2] + 1) if current and current[0] is self else (None, 0)
        event = Event(self, next(self._ids), parent, depth, kind, name)
        event.set(**fields)
        token = _parent.set((self, event.fields["id"], depth))
        try:
            yield event
        except BaseException as exc:
            if event.fields.get("error") is None:
                event.fields["error"] = shorten(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            _parent.reset(token)
            event.finish()


def current_tracer() -> Tracer | None:
    """The tracer of the event this task is inside, if any (the router files sub-calls with it)."""
    current = _parent.get()
    return current[0] if current else None


def read_tail_text(path: Path, max_bytes: int) -> str:
    """The trace as JSON Lines, or its last whole lines within `max_bytes` (for the trace resource)."""
    data = safefs.read_tail(path, max_bytes + 1)
    if len(data) > max_bytes:
        data = data[data.find(b"\n") + 1 :]
    return data.decode("utf-8", "replace")


def read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                events.append(json.loads(line))
    return events


def whole_lines(path: Path, offset: int) -> tuple[list[bytes | None], int, int]:
    """The whole lines written from byte `offset` on (about BATCH_BYTES of them), the offset after them and
    the file's size; a line longer than MAX_LINE_BYTES is None. One reader for every consumer that reads a
    trace as it grows (`rlm-mcp trace` and `--follow`, replay counting its calls), so all split it the same
    way (on "\\n" only). Never follows a link or opens a FIFO (the session's directory is written while
    model-written code runs)."""
    data, size = safefs.read_from(path, offset, BATCH_BYTES)
    end = data.rfind(b"\n") + 1
    if end:
        return data[: end - 1].split(b"\n"), offset + end, size
    if len(data) < BATCH_BYTES:  # a line still being written, or none at all
        return [], offset, size
    position = offset + len(data)  # one line longer than a batch: skip to its end, if it has one yet
    while True:
        more, size = safefs.read_from(path, position, BATCH_BYTES)
        newline = more.find(b"\n")
        if newline >= 0:
            return [None], position + newline + 1, size
        if len(more) < BATCH_BYTES:
            return [], offset, size
        position += len(more)
