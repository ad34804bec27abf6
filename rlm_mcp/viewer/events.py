"""A trace's lines checked and rebuilt into the events the page shows, as if every line were hostile.

A trace holds text chosen by model-written code and by the files it read (names, code, output, prompts), and
a trace file can be forged outright. So each line is checked (id an int, parent an earlier id or null, a
known type or else a generic "event", numbers numeric, texts text, each bounded) and rebuilt from the fields
that pass; lines that are not events are skipped and listed by number. A parent must have a smaller id than
its child (ids are taken when an event starts, and a parent starts before its children), which makes a
forged cycle impossible: the page walks the tree without recursion and always ends.

The same `TraceReader` serves a whole file (`rlm-mcp trace`) and the lines appended since the last read
(`rlm-mcp trace --follow`), so a page built either way shows the same events.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_mcp import safefs
from rlm_mcp.escaping import printable
from rlm_mcp.trace import BATCH_BYTES, MAX_LINE_BYTES, whole_lines

Event = dict[str, Any]

KINDS = ("tool", "cell", "sub_call", "rlm", "root_call", "distill")
NUMBERS = (
    "started",
    "elapsed_s",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "attempts",
    "latency_s",
    "level",
    "iterations",
)
NAMES = ("name", "model", "backend", "outcome", "kind")  # short words, shown on one line
TEXTS = (
    "arguments",
    "code",
    "stdout",
    "stderr",
    "result",
    "system",
    "prompt",
    "answer",
    "error",
    "tool_calls",
    "texts_dropped",
)
NAME_LIMIT = 200
LABEL_LIMIT = 160
TEXT_LIMIT = 100_000  # one text; the tracer keeps most texts to 4,000 characters, answers and code to 100,000
MAX_SAFE_INTEGER = 2**53 - 1
LATEST_START = 32_503_680_000.0  # the year 3000: a later (or negative) start is forged, and no date can show it
LISTED_PROBLEMS = 50  # the problems kept as text; the rest are counted
LABEL_ARGUMENTS = ("path", "paths", "url", "name", "code", "prompt", "question", "handle")


def _json(value: Any) -> str:
    for indent in (1, None):  # indented is easier to read; the C encoder (no indent) takes deeper nesting
        try:
            return json.dumps(value, ensure_ascii=False, indent=indent, default=str)
        except (RecursionError, ValueError):
            continue
    return "(too deeply nested to show)"


def _text(value: Any) -> str | None:
    """A text field as text: strings as they are, other JSON values as JSON, shortened; None if empty."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    text = value if isinstance(value, str) else _json(value)
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + f"... [{len(text) - TEXT_LIMIT:,} more characters]"


def _is_int(value: Any) -> bool:
    """An integer the page's script holds exactly (a JavaScript number is a double: beyond 2**53 two ids
    could become one, and an event its own parent)."""
    return isinstance(value, int) and not isinstance(value, bool) and abs(value) <= MAX_SAFE_INTEGER


def _number(value: Any) -> float | int | None:
    if _is_int(value):
        return value
    return value if isinstance(value, float) and math.isfinite(value) else None


def _first_line(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _label(raw: dict[str, Any], kind: str, arguments: Any) -> str:
    """What a row of the tree says after its kind: the part of the event a reader scans for."""
    if kind == "tool" and isinstance(arguments, dict):
        for key in LABEL_ARGUMENTS:
            value = arguments.get(key)
            if isinstance(value, str) and value.strip():
                return _first_line(value)
            if isinstance(value, list) and value and isinstance(value[0], str):
                return ", ".join(str(item) for item in value[:3]) + (" ..." if len(value) > 3 else "")
        return ""
    if kind == "cell":
        return _first_line(raw.get("code"))
    if kind in ("sub_call", "rlm"):
        return _first_line(raw.get("prompt"))
    if kind == "root_call":
        calls = raw.get("tool_calls")
        return "calls " + ", ".join(str(call) for call in calls[:5]) if isinstance(calls, list) and calls else ""
    return ""


def clean_event(raw: Any) -> tuple[Event | None, str | None]:
    """The event rebuilt from the fields of `raw` that have the schema's types, and what was wrong, if anything.

    Only the rebuilt event reaches the page, and only its non-empty fields (a page of 100k sub-calls is
    mostly their texts). A field of the wrong type is dropped or turned into text, an unknown type becomes a
    generic "event" (the type shown as text), a parent that is not an earlier event puts the event at the
    top. Without an integer id there is nothing to hang it on, so it is skipped. A run_code call's code is
    kept apart from its other arguments, so that the page can leave it out where its cell shows it.
    """
    if not isinstance(raw, dict):
        return None, f"not a JSON object ({type(raw).__name__})"
    event_id = raw.get("id")
    if not _is_int(event_id):
        return None, f"id is not an integer of at most 2**53 ({printable(_json(event_id), NAME_LIMIT)})"
    problem = None
    parent = raw.get("parent")
    if parent is not None and not (_is_int(parent) and parent < event_id):
        parent, problem = None, f"event {event_id}: parent is not an earlier event's id; shown at the top"
    kind = raw.get("type") if raw.get("type") in KINDS else "event"
    event: Event = {"id": event_id, "type": kind}
    if parent is not None:
        event["parent"] = parent
    if kind == "event":
        event["unknown_type"] = printable(_text(raw.get("type")) or "(none)", NAME_LIMIT)
    arguments = raw.get("arguments")
    if kind == "tool" and isinstance(arguments, dict) and isinstance(arguments.get("code"), str):
        arguments = {key: value for key, value in arguments.items() if key != "code"}
        event["code"] = _text(raw["arguments"]["code"])
    for name in NUMBERS:
        number = _number(raw.get(name))
        if number is not None and (name != "started" or 0 <= number <= LATEST_START):
            event[name] = number
    for name in NAMES:
        text = _text(raw.get(name))
        if text:
            event[name] = printable(text, NAME_LIMIT)
    for name in TEXTS:
        text = _text(arguments if name == "arguments" else raw.get(name))
        if text and name not in event:
            event[name] = text
    label = _label(raw, kind, raw.get("arguments"))
    if label:
        event["label"] = printable(label, LABEL_LIMIT)
    if raw.get("cached") is True:
        event["cached"] = True
    return event, problem


@dataclass
class TraceReader:
    """Checks a trace's lines into events and numbered problems, the line numbers counting on from `line`.

    The first LISTED_PROBLEMS problems are kept as text, the rest only counted, so a forged trace of a
    million bad lines costs a number, not a list. Ids are checked for repeats among the lines this reader
    has read (a followed page checks the rest itself, see page.js `ingest`).
    """

    line: int = 0  # lines read so far
    problem_count: int = 0
    problems: list[str] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)

    def _problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < LISTED_PROBLEMS:
            self.problems.append(text)

    def read_lines(self, lines: list[bytes | None]) -> list[Event]:
        """The events of `lines` (None: a line longer than MAX_LINE_BYTES, skipped unread)."""
        events: list[Event] = []
        for data in lines:
            self.line += 1
            if data is None:
                self._problem(f"line {self.line}: longer than {MAX_LINE_BYTES:,} bytes; skipped")
                continue
            if not data.strip():
                continue
            try:
                event, problem = clean_event(json.loads(data.decode("utf-8", "replace")))
            except (ValueError, RecursionError):
                self._problem(f"line {self.line}: not JSON; skipped")
                continue
            if event is not None and event["id"] in self.seen:
                event, problem = None, f"id {event['id']} repeated"
            if problem:
                self._problem(f"line {self.line}: {problem}" + ("" if event else "; skipped"))
            if event is not None:
                self.seen.add(event["id"])
                events.append(event)
        return events


def load_events(path: Path) -> tuple[list[Event], TraceReader]:
    """The valid events of a whole trace, and the reader that holds what was skipped or changed.

    Not trace.read_events: that stops at the first line that is not JSON, and a trace worth looking at may
    end in a line cut short by a crash, or be forged. Undecodable bytes become U+FFFD.
    """
    path.lstat()  # a missing trace is an error here (following, it is one not written yet)
    reader = TraceReader()
    events: list[Event] = []
    offset, size = 0, 1
    while offset < size:
        lines, after, size = whole_lines(path, offset)
        if after == offset:  # the last line has no newline (a crash cut it): read it as it is
            data, _ = safefs.read_from(path, offset, BATCH_BYTES)
            events += reader.read_lines([data if data and len(data) <= MAX_LINE_BYTES else None] if data else [])
            break
        events += reader.read_lines(lines)
        offset = after
    return events, reader
