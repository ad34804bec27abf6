"""A trace read for replay: the session's top-level tool calls, what each ran, and the answers it got.

A trace holds text chosen by model-written code and the files it read, and a trace file can be forged
outright, so it is read as hostile input: opened without following a link, only a regular file, bounded in
size and per line; an event is kept only if its id is an integer, its parent an integer or null and its type
text, lines that are not events are skipped and counted, and every field is type-checked where it is used.
Nothing here runs any of it: the cells' code runs in the replay server's sandbox, as a client's would.

Both the recorded trace and the replay's own are read this way, and steps are paired by position, so the
comparison is of the same fields, shortened the same way by the same tracer.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections import Counter, defaultdict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_mcp.errors import TraceError
from rlm_mcp.escaping import printable
from rlm_mcp.llm.recording import reply_calls
from rlm_mcp.llm.types import ToolCall
from rlm_mcp.trace import SCHEMA_VERSION, was_shortened
from rlm_mcp.units import MiB

MAX_TRACE_BYTES = 1024 * MiB  # a trace keeps its texts to 256 MiB; past that it is events without texts
MAX_LINE_BYTES = 64 * MiB  # a tool call's arguments are kept whole, so one line can be long
MAX_DEPTH = 64  # real traces nest a few levels deep; deeper is forged
EVENT_TYPES = ("tool", "cell", "sub_call", "rlm", "root_call")
REPLAYED_TOOLS = ("load_context", "run_code", "sub_query")  # the server's tools; all of them change the session
ROUTER_KINDS = ("window", "budget")  # failures the router itself gives before a backend is asked: not answers
SHA256_HEX = 64
BUSY = "run_code() without code waits for its result"  # in the refusal of code sent while a cell runs
# The fields replay reads; the rest of an event is dropped as it is read, so a forged field costs nothing.
KEPT = ("v", "id", "parent", "type", "name", "arguments", "code", "stdout", "stderr", "result", "outcome", "error")
KEPT += ("kind", "chars", "cached", "cache", "request_sha256", "turn_sha256", "requested_model", "model")
KEPT += ("input_tokens", "output_tokens", "subscription", "answer", "reply", "texts_dropped")


@dataclass(frozen=True)
class Answer:
    """A recorded answer to one request (a sub-call, or a root model's turn), given back in replay.

    `error`/`kind`: the call failed, and replays failing the same way; `unusable`: why it cannot be given
    back (its text was shortened in the trace)."""

    text: str = ""
    calls: tuple[ToolCall, ...] = ()
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    subscription: bool = False
    error: str | None = None
    kind: str | None = None
    unusable: str | None = None


@dataclass
class Step:
    """One top-level tool call of the session. `skip`: why it is not re-issued ("" if it is); `wait`: a
    run_code() without code, which only waited for a cell (replay always waits, so it is not re-issued)."""

    number: int
    tool: str
    event: dict[str, Any]
    arguments: dict[str, Any]
    cell: dict[str, Any] | None
    sub_calls: int
    not_recorded: int
    skip: str = ""
    wait: bool = False

    @property
    def label(self) -> str:
        if self.cell is not None and isinstance(self.cell.get("name"), str):
            return printable(self.cell["name"], 40)
        name = self.arguments.get("name")
        if self.tool == "load_context" and isinstance(name, str):
            return f"load_context {printable(name, 80)}"
        return f"{printable(self.tool, 40)} (call {self.number})"


@dataclass
class Recording:
    path: Path
    steps: list[Step]
    answers: dict[str, deque[Answer]] = field(default_factory=dict)  # request_sha256 -> answers, in id order
    turns: dict[str, deque[Answer]] = field(default_factory=dict)  # turn_sha256 -> root turns, in id order
    default_model: str | None = None
    skipped_lines: int = 0
    notes: list[str] = field(default_factory=list)


def _lines(path: Path) -> Iterator[bytes | None]:
    """The file's lines; None for one longer than MAX_LINE_BYTES (skipped unread)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TraceError(f"no such trace: {printable(str(path), 1000)}") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TraceError(f"{printable(str(path), 1000)} is a symbolic link; name the trace file itself") from None
        raise TraceError(f"cannot open {printable(str(path), 1000)}: {printable(str(exc), 200)}") from None
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_TRACE_BYTES:
        os.close(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise TraceError(f"{printable(str(path), 1000)} is not a regular file (a trace is a .jsonl file)")
        raise TraceError(f"the trace holds {info.st_size:,} bytes, more than the {MAX_TRACE_BYTES:,} replay reads")
    with os.fdopen(descriptor, "rb") as handle:
        read = 0
        while read <= MAX_TRACE_BYTES:
            line = handle.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            read += len(line)
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while (rest := handle.readline(MiB)) and not rest.endswith(b"\n"):
                    read += len(rest)
                yield None
                continue
            yield line


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_events(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The trace's events in id order, and how many lines were skipped (not JSON, not an event, repeated)."""
    events: dict[int, dict[str, Any]] = {}
    skipped = 0
    newer: set[Any] = set()
    for line in _lines(path):
        if line is None or not line.strip():
            skipped += line is None
            continue
        try:
            raw = json.loads(line.decode("utf-8", "replace"))
        except (ValueError, RecursionError):
            skipped += 1
            continue
        if not isinstance(raw, dict):
            skipped += 1
            continue
        if _is_int(raw.get("v")) and raw["v"] > SCHEMA_VERSION:
            newer.add(raw["v"])
            continue
        parent = raw.get("parent")
        valid = (
            raw.get("v") == SCHEMA_VERSION
            and _is_int(raw.get("id"))
            and (parent is None or _is_int(parent))
            and raw.get("type") in EVENT_TYPES
            and raw.get("id") not in events
        )
        if not valid:
            skipped += 1
            continue
        events[raw["id"]] = {name: raw[name] for name in KEPT if name in raw}
    if not events and newer:
        raise TraceError(f"the trace was written by a newer rlm-mcp (schema v{max(newer)}); upgrade to replay it")
    if not events:
        raise TraceError(f"{printable(str(path), 1000)} holds no rlm-mcp trace events (is it a session's trace.jsonl?)")
    return [events[key] for key in sorted(events)], skipped


class Tree:
    """The events' parent links, walked with a bound on depth and a guard against the cycles a forged trace
    may hold."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.children: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            if event["parent"] is not None:
                self.children[event["parent"]].append(event)

    def below(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        seen = {event["id"]}
        level = [event]
        for _ in range(MAX_DEPTH):
            level = [child for parent in level for child in self.children.get(parent["id"], ())]
            level = [child for child in level if child["id"] not in seen]
            if not level:
                break
            seen.update(child["id"] for child in level)
            found.extend(level)
        return sorted(found, key=lambda item: item["id"])


def _count(events: list[dict[str, Any]]) -> tuple[int, int]:
    """Sub-calls among `events`, and how many of those and of the root turns were not in a replay's record."""
    sub_calls = sum(1 for event in events if event["type"] == "sub_call")
    not_recorded = sum(1 for event in events if event.get("kind") == "not_recorded")
    return sub_calls, not_recorded


def _skip(event: dict[str, Any], tool: str, arguments: dict[str, Any], cell: dict[str, Any] | None) -> tuple[str, bool]:
    """Why a step cannot be re-issued as recorded ("" if it can), and whether it only waited for a cell."""
    if tool not in REPLAYED_TOOLS:
        return f"{printable(tool, 40)} is not a tool replay knows", False
    dropped = event.get("texts_dropped")
    if isinstance(dropped, list) and "arguments" in dropped:
        return "the trace was past its size for texts and kept none of this call's arguments", False
    error = event.get("error")
    if tool == "run_code" and cell is None and isinstance(error, str) and BUSY in error:
        return "it was refused because a cell was still running (when depends on timing)", False
    if tool == "run_code" and arguments.get("code") is None:
        if arguments.get("interrupt") is True:
            return "run_code(interrupt=True) is not replayed (when it landed depends on timing)", False
        return "", True
    for name, value in arguments.items():
        if isinstance(value, str) and was_shortened(value):
            if name == "code" and cell is not None and _full_code(cell) is not None:
                continue  # the cell kept the code whole
            return f"its `{printable(name, 40)}` was too long for the trace and was shortened", False
    return "", False


def _full_code(cell: dict[str, Any]) -> str | None:
    code = cell.get("code")
    return code if isinstance(code, str) and not was_shortened(code) else None


def code_of(step: Step) -> str | None:
    """The code to re-run: the call's, or its cell's where the call's was shortened."""
    code = step.arguments.get("code")
    if isinstance(code, str) and not was_shortened(code):
        return code
    return _full_code(step.cell) if step.cell is not None else None


def steps_of(events: list[dict[str, Any]], tree: Tree) -> list[Step]:
    steps = []
    for event in events:
        if event["type"] != "tool" or event["parent"] is not None:
            continue
        tool = event.get("name") if isinstance(event.get("name"), str) else ""
        arguments = event.get("arguments") if isinstance(event.get("arguments"), dict) else {}
        below = tree.below(event)
        cells = [child for child in tree.children.get(event["id"], ()) if child["type"] == "cell"]
        cell = cells[0] if cells else None
        sub_calls, not_recorded = _count(below)
        skip, wait = _skip(event, tool, arguments, cell)
        steps.append(Step(len(steps) + 1, tool, event, arguments, cell, sub_calls, not_recorded, skip, wait))
    return steps


def _tokens(event: dict[str, Any], name: str) -> int:
    value = event.get(name)
    return value if _is_int(value) and value >= 0 else 0


def _answer(event: dict[str, Any]) -> Answer | None:
    """What a sub_call or root_call event recorded as its answer; None if it is not an answer a backend gave
    (a failure of the router's own, or an event written before replay was recorded)."""
    if event.get("cached") is True and event.get("cache") != "memory":
        return None  # the session's own cache answered it, and the replay's answers it again the same way
    error, kind = event.get("error"), event.get("kind")
    model = event.get("model") if isinstance(event.get("model"), str) else ""
    used = _tokens(event, "input_tokens"), _tokens(event, "output_tokens")
    if error is not None:
        if not isinstance(error, str) or not isinstance(kind, str) or kind in ROUTER_KINDS:
            return None
        return Answer(model=model, error=error, kind=kind)
    subscription = event.get("subscription") is True
    if event["type"] == "root_call":
        reply = event.get("reply")
        calls = reply_calls(reply)
        if calls is None:
            return Answer(unusable="the recorded root-model reply was too long for the trace (or is missing)")
        text = reply["text"] if isinstance(reply, dict) else ""
        return Answer(text, calls, model, *used, subscription=subscription)
    text = event.get("answer")
    if not isinstance(text, str):
        return Answer(unusable="the trace holds no answer to this sub-call (its texts were dropped)")
    if was_shortened(text):
        return Answer(unusable="the recorded answer was too long for the trace and was shortened")
    return Answer(text, (), model, *used, subscription=subscription)


def load(path: Path) -> Recording:
    """The recording of a session: its steps, and its answers by request. Raises TraceError."""
    events, skipped = read_events(path)
    tree = Tree(events)
    steps = steps_of(events, tree)
    if not steps:
        raise TraceError(
            "the trace holds no top-level tool calls to replay (an `rlm-mcp ask` run's trace cannot be replayed)"
        )
    if all(step.skip or step.wait for step in steps):
        raise TraceError("nothing in the trace can be replayed: " + (next((s.skip for s in steps if s.skip), "")
                         or "its tool calls only waited for cells"))  # fmt: skip
    recording = Recording(path, steps, skipped_lines=skipped)
    requested: Counter[str] = Counter()
    unkeyed = 0
    for event in events:
        if event["type"] not in ("sub_call", "root_call"):
            continue
        key = event.get("request_sha256" if event["type"] == "sub_call" else "turn_sha256")
        if not (isinstance(key, str) and len(key) == SHA256_HEX):
            unkeyed += 1
            continue
        answer = _answer(event)
        if answer is None:
            continue
        table = recording.answers if event["type"] == "sub_call" else recording.turns
        table.setdefault(key, deque()).append(answer)
        model = event.get("requested_model")
        if event["type"] == "sub_call" and isinstance(model, str):
            requested[model] += 1
    if requested:
        recording.default_model = requested.most_common(1)[0][0]
    if unkeyed:
        recording.notes.append(
            f"{unkeyed:,} model calls were recorded without a request digest (an older rlm-mcp): "
            "a replay cannot answer them"
        )
    if skipped:
        recording.notes.append(f"{skipped:,} lines of the trace are not events and were skipped")
    return recording
