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

from rlm_mcp.escaping import printable

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
MAX_LINE_BYTES = 4 * 1024 * 1024  # a longer line is forged: the tracer's are far shorter
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


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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
        return None, f"id is not an integer ({printable(_json(event_id), NAME_LIMIT)})"
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
        if number is not None:
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
    """Reads a trace's lines, whole or as they are appended, into checked events and numbered problems."""

    seen: set[int] = field(default_factory=set)
    line: int = 0  # lines read so far
    problems: int = 0

    def read_lines(self, lines: list[bytes]) -> tuple[list[Event], list[str]]:
        events: list[Event] = []
        problems: list[str] = []
        for data in lines:
            self.line += 1
            if not data.strip():
                continue
            if len(data) > MAX_LINE_BYTES:
                problems.append(f"line {self.line}: longer than {MAX_LINE_BYTES:,} bytes; skipped")
                continue
            try:
                raw = json.loads(data.decode("utf-8", "replace"))
            except (ValueError, RecursionError):
                problems.append(f"line {self.line}: not JSON; skipped")
                continue
            event, problem = clean_event(raw)
            if event is not None and event["id"] in self.seen:
                event, problem = None, f"id {event['id']} repeated"
            if problem:
                problems.append(f"line {self.line}: {problem}" + ("" if event else "; skipped"))
            if event is not None:
                self.seen.add(event["id"])
                events.append(event)
        self.problems += len(problems)
        return events, problems


def load_events(path: Path) -> tuple[list[Event], list[str]]:
    """The valid events of a whole trace, and a line-numbered list of what was skipped or changed.

    Not trace.read_events: that stops at the first line that is not JSON, and a trace worth looking at may
    end in a line cut short by a crash, or be forged. Undecodable bytes become U+FFFD.
    """
    reader = TraceReader()
    events: list[Event] = []
    problems: list[str] = []
    with open(path, "rb") as handle:
        batch: list[bytes] = []
        for line in handle:
            batch.append(line)
            if len(batch) >= 10_000:
                more, wrong = reader.read_lines(batch)
                events += more
                problems += wrong
                batch = []
        more, wrong = reader.read_lines(batch)
    return events + more, problems + wrong
