"""`rlm-mcp trace FILE.jsonl -o trace.html`: a session's trace as one self-contained HTML page.

No network and no external assets: the page is opened from disk, attached to a bug report or mailed, and
must look the same anywhere. Each event is a <details> element (so expanding works even without script);
a little inline script adds search, expand/collapse all, and `#expand=ID` in the address to open one node
and its ancestors. Tool calls and cells start open, sub-calls start closed under their cell. Each node shows
its time, and for tool calls and cells the tokens and cost of the sub-calls beneath them; errors are red.

A trace holds text chosen by model-written code and by the files it read (names, code, output, prompts), and
a trace file can be forged outright. So the page is built as if every line were hostile: each event is
checked (id an int, parent an int or null, a known type or else a generic "event", numbers numeric, texts
text) and rebuilt from the fields that pass, lines that are not events are skipped and listed by number,
everything put into the page is HTML-escaped (attributes with quote=True), names in a summary line go
through `printable`, long texts are shortened, and a forged tree (cycles, repeated ids, endless nesting)
is cut so that every event is shown once, at a bounded depth.
"""

from __future__ import annotations

import html
import json
import math
from collections import defaultdict, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from rlm_mcp.escaping import printable

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em;margin:0 0 .3em}
.totals{color:#444;margin-bottom:1em}
.controls{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #ddd;margin-bottom:.6em}
input{font:inherit;padding:.2em .4em;width:28em}
details{margin:.15em 0 .15em 1.2em;border-left:3px solid #ccd}
details.tool{border-color:#6b8cce}details.cell{border-color:#7cb87c}details.sub_call{border-color:#c9a54a}
details.error>summary{background:#fde2e2}
summary{cursor:pointer;padding:.1em .4em}
.kind{font-weight:600;text-transform:uppercase;font-size:.75em;letter-spacing:.05em;margin-right:.4em}
.meta{color:#666;margin-left:.6em;font-size:.9em}
.err{color:#b00020;font-weight:600;margin-left:.6em}
pre{background:#f6f7f9;padding:.4em .6em;margin:.2em 0 .2em 1.2em;white-space:pre-wrap;word-break:break-word;
max-height:24em;overflow:auto}
.label{color:#555;font-size:.85em;margin-left:1.2em}
.hidden{display:none}
.problems{color:#8a4b00;margin-bottom:1em}
"""

SCRIPT = """
function openPath(node){
  while(node&&node.tagName==='DETAILS'){node.open=true;node=node.parentElement.closest('details');}
}
function setAll(open){document.querySelectorAll('details').forEach(d=>d.open=open);}
function search(query){
  query=query.trim().toLowerCase();
  const nodes=[...document.querySelectorAll('details')];
  nodes.forEach(d=>d.classList.toggle('hidden',!!query));
  if(!query){return;}
  nodes.forEach(d=>{if(d.dataset.search.includes(query)){
    let n=d;while(n){n.classList.remove('hidden');n.open=true;n=n.parentElement.closest('details');}
    d.querySelectorAll('details').forEach(c=>c.classList.remove('hidden'));}});
  document.getElementById('matches').textContent=
    nodes.filter(d=>d.dataset.search.includes(query)).length+' matching';
}
window.addEventListener('DOMContentLoaded',()=>{
  const m=location.hash.match(/expand=(\\d+)/);
  if(m){const node=document.getElementById('n'+m[1]);if(node){openPath(node);node.scrollIntoView();}}
});
"""


Event = dict[str, Any]

KINDS = ("tool", "cell", "sub_call")
NUMBERS = ("elapsed_s", "input_tokens", "output_tokens", "cost_usd", "attempts", "latency_s")
NAMES = ("name", "model", "backend")
TEXTS = ("arguments", "outcome", "code", "stdout", "stderr", "result", "system", "prompt", "answer", "error")
BODY_FIELDS = {
    "tool": (("arguments", "arguments"), ("outcome", "outcome")),
    "cell": (("code", "code"), ("stdout", "stdout"), ("stderr", "stderr"), ("result", "value"), ("error", "error")),
    "sub_call": (("system", "system"), ("prompt", "prompt"), ("answer", "answer"), ("error", "error")),
    "event": tuple((field, field) for field in TEXTS),  # of an unknown type: whatever texts it has
}
NAME_LIMIT = 200  # a name, model or type in a summary line
TEXT_LIMIT = 100_000  # one text block; the tracer shortens its texts to 4,000, so only a forged trace gets here
SEARCH_LIMIT = 200_000  # the searchable text of one node
MAX_DEPTH = 64  # real traces nest 3 deep; deeper is forged, and would exhaust recursion and the HTML parser
LISTED_PROBLEMS = 50


class Written(NamedTuple):
    events: int  # shown in the page
    problems: int  # lines skipped as not events, or events with a field neutralised; listed in the page


def _json(value: Any) -> str:
    for indent in (1, None):  # indented is easier to read; the C encoder (no indent) takes deeper nesting
        try:
            return json.dumps(value, ensure_ascii=False, indent=indent, default=str)
        except (RecursionError, ValueError):
            continue
    return "(too deeply nested to show)"


def _text(value: Any) -> str | None:
    """A text field as text: strings as they are, other JSON values as JSON, shortened; None if empty."""
    if value is None or value == "":
        return None
    text = value if isinstance(value, str) else _json(value)
    return text if len(text) <= TEXT_LIMIT else text[:TEXT_LIMIT] + f"... [{len(text) - TEXT_LIMIT:,} more characters]"


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def clean_event(raw: Any) -> tuple[Event | None, str | None]:
    """The event rebuilt from the fields of `raw` that have the schema's types, and what was wrong, if anything.

    Only the rebuilt event reaches the page: a field of the wrong type is dropped or turned into text, an
    unknown type becomes a generic "event" (the type shown as text), a parent of the wrong type puts the
    event at the top. Without an integer id there is nothing to hang it on, so it is skipped.
    """
    if not isinstance(raw, dict):
        return None, f"not a JSON object ({type(raw).__name__})"
    if not _is_int(raw.get("id")):
        return None, f"id is not an integer ({printable(_json(raw.get('id')), NAME_LIMIT)})"
    problem = None
    parent = raw.get("parent")
    if parent is not None and not _is_int(parent):
        parent, problem = None, f"event {raw['id']}: parent is not an integer or null; shown at the top"
    kind = raw.get("type")
    event: Event = {"id": raw["id"], "parent": parent, "type": kind if kind in KINDS else "event"}
    if event["type"] == "event":
        event["unknown_type"] = printable(_text(kind) or "(none)", NAME_LIMIT)
    event.update({field: _number(raw.get(field)) for field in NUMBERS})
    event.update({field: printable(_text(raw.get(field)) or "", NAME_LIMIT) for field in NAMES})
    event.update({field: _text(raw.get(field)) for field in TEXTS})
    event["cached"] = raw.get("cached") is True
    return event, problem


def load_events(path: Path) -> tuple[list[Event], list[str]]:
    """The valid events of a trace, and a line-numbered list of what was skipped or changed.

    Not trace.read_events: that stops at the first line that is not JSON, and a trace worth looking at may
    end in a line cut short by a crash, or be forged. Undecodable bytes become U+FFFD.
    """
    events: list[Event] = []
    problems: list[str] = []
    seen: set[int] = set()
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except (ValueError, RecursionError):
                problems.append(f"line {number}: not JSON; skipped")
                continue
            event, problem = clean_event(raw)
            if event is not None and event["id"] in seen:
                event, problem = None, f"id {event['id']} repeated"
            if problem:
                problems.append(f"line {number}: {problem}" + ("" if event else "; skipped"))
            if event is not None:
                seen.add(event["id"])
                events.append(event)
    return events, problems


def _tree(events: list[Event]) -> tuple[list[Event], dict[int, list[Event]]]:
    """The top-level events and each event's children, every event placed exactly once.

    A forged trace can have parent cycles or nest without end: an event in a cycle, or deeper than
    MAX_DEPTH, starts a new top-level branch instead, so rendering is bounded and no event is lost.
    """
    ordered = sorted(events, key=lambda e: e["id"])
    known = {e["id"] for e in ordered}
    wanted: dict[int, list[Event]] = defaultdict(list)
    for event in ordered:
        if event["parent"] in known and event["parent"] != event["id"]:
            wanted[event["parent"]].append(event)
    starts = deque(e for e in ordered if e["parent"] not in known or e["parent"] == e["id"])
    rest = iter(ordered)  # after the real roots, whatever a cycle kept unreachable
    roots: list[Event] = []
    children: dict[int, list[Event]] = defaultdict(list)
    placed: set[int] = set()
    while True:
        root = starts.popleft() if starts else next((e for e in rest if e["id"] not in placed), None)
        if root is None:
            break
        if root["id"] in placed:
            continue
        roots.append(root)
        placed.add(root["id"])
        stack = [(root, 1)]
        while stack:
            node, depth = stack.pop()
            for child in wanted.get(node["id"], ()):
                if child["id"] in placed:
                    continue
                if depth >= MAX_DEPTH:
                    starts.append(child)
                    continue
                placed.add(child["id"])
                children[node["id"]].append(child)
                stack.append((child, depth + 1))
    return roots, children


def _money(cost: float | None) -> str:
    return "cost unknown" if cost is None else f"${cost:.4f}"


def _subtotals(roots: list[Event], children: dict[int, list[Event]]) -> dict[int, dict[str, Any]]:
    """Tokens and cost of the sub-calls at or beneath each event (the tree is at most MAX_DEPTH deep)."""
    totals: dict[int, dict[str, Any]] = {}

    def walk(event: Event) -> dict[str, Any]:
        own = {"calls": 0, "input": 0, "output": 0, "cost": 0.0, "unknown_cost": False}
        if event["type"] == "sub_call":
            own.update(calls=1, input=event["input_tokens"] or 0, output=event["output_tokens"] or 0)
            own["cost"] = event["cost_usd"] or 0.0
            own["unknown_cost"] = event["cost_usd"] is None and not event["error"]
        for child in children.get(event["id"], []):
            sub = walk(child)
            for key in ("calls", "input", "output", "cost"):
                own[key] += sub[key]
            own["unknown_cost"] = own["unknown_cost"] or sub["unknown_cost"]
        totals[event["id"]] = own
        return own

    for root in roots:
        walk(root)
    return totals


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def _block(label: str, text: str | None) -> str:
    if not text:
        return ""
    return f'<div class="label">{_escape(label)}</div><pre>{_escape(text)}</pre>'


def _node(event: Event, children: dict[int, list[Event]], totals: dict[int, dict[str, Any]]) -> str:
    kind = event["type"]  # one of KINDS or "event": safe as a class name, escaped all the same
    total = totals.get(event["id"], {})
    meta = [f"{event['elapsed_s'] or 0:.3f} s"]
    if kind == "event":
        meta.append(f"type {event['unknown_type']}")
    if kind == "sub_call":
        meta.append(f"{event['model'] or '?'} via {event['backend'] or '?'}")
        meta.append(f"{event['input_tokens'] or 0:,} in / {event['output_tokens'] or 0:,} out tokens")
        meta.append(_money(event["cost_usd"]))
        if event["cached"]:
            meta.append("cache hit")
        if (event["attempts"] or 1) > 1:
            meta.append(f"{event['attempts']} attempts")
    elif total.get("calls"):
        cost = _money(total["cost"]) + (" + unknown" if total["unknown_cost"] else "")
        meta.append(f"{total['calls']} sub-calls, {total['input']:,} in / {total['output']:,} out tokens, {cost}")
    error = event["error"]
    body = "".join(_block(label, event[field]) for field, label in BODY_FIELDS[kind])
    inner = "".join(_node(child, children, totals) for child in children.get(event["id"], []))
    texts = {key: value for key, value in event.items() if isinstance(value, str) and value}
    searchable = json.dumps(texts, ensure_ascii=False)[:SEARCH_LIMIT].lower()
    classes = f"{kind}{' error' if error else ''}"
    opened = "" if kind == "sub_call" else " open"
    last_line = (error.strip().splitlines() or [""])[-1] if error else ""
    return (
        f'<details class="{_escape(classes)}" id="n{_escape(str(event["id"]))}" data-search="{_escape(searchable)}"'
        f'{opened}><summary><span class="kind">{_escape(kind)}</span>{_escape(event["name"])}'
        f'<span class="meta">{_escape(" · ".join(meta))}</span>'
        + (f'<span class="err">{_escape(printable(last_line, 160))}</span>' if error else "")
        + f"</summary>{body}{inner}</details>"
    )


def render(events: list[Event], title: str, problems: Sequence[str] = ()) -> str:
    """The page for events made by `clean_event`; `problems` (lines skipped or changed) are listed at its top."""
    roots, children = _tree(events)
    known = {e["id"] for e in events}
    totals = _subtotals(roots, children)
    sub_calls = [e for e in events if e["type"] == "sub_call"]
    cost_known = sum(e["cost_usd"] or 0.0 for e in sub_calls)
    summary = (
        f"{sum(e['type'] == 'tool' for e in events)} tool calls · {sum(e['type'] == 'cell' for e in events)} "
        f"cells · {len(sub_calls)} sub-calls · {sum(e['input_tokens'] or 0 for e in sub_calls):,} in / "
        f"{sum(e['output_tokens'] or 0 for e in sub_calls):,} out tokens · {_money(cost_known)} · "
        f"{sum(1 for e in events if e['error'])} errors · "
        f"{sum(e['elapsed_s'] or 0 for e in roots if e['parent'] not in known):.2f} s in tool calls"
    )
    listed = "".join(f"<li>{_escape(printable(problem, 300))}</li>" for problem in problems[:LISTED_PROBLEMS])
    more = len(problems) - LISTED_PROBLEMS
    report = (
        f'<div class="problems" id="problems">{len(problems):,} lines of the trace skipped or changed:'
        f"<ul>{listed}{f'<li>and {more:,} more</li>' if more > 0 else ''}</ul></div>"
        if problems
        else ""
    )
    nodes = "".join(_node(root, children, totals) for root in roots)
    title = _escape(printable(title, NAME_LIMIT))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
        f'<h1>{title}</h1><div class="totals" id="totals">{_escape(summary)}</div>{report}'
        '<div class="controls"><input id="q" type="search" placeholder="Search code, prompts, answers, errors" '
        'oninput="search(this.value)"> <button onclick="setAll(true)">Expand all</button> '
        '<button onclick="setAll(false)">Collapse all</button> <span id="matches"></span></div>'
        f'<main id="tree">{nodes}</main></body></html>'
    )


def write_html(trace: Path, output: Path) -> Written:
    """Render `trace` into `output`: how many events it shows, and how many lines it skipped or changed."""
    events, problems = load_events(trace)
    page = render(events, f"rlm-mcp trace: {trace.parent.name or trace.name}", problems)
    output.write_text(page, encoding="utf-8", errors="replace")  # a lone surrogate from JSON becomes "?"
    return Written(len(events), len(problems))
