"""`rlm-mcp trace FILE.jsonl -o trace.html`: a session's trace as one self-contained HTML page.

No network and no external assets: the page is opened from disk, attached to a bug report or mailed, and
must look the same anywhere. Each event is a <details> element (so expanding works even without script);
a little inline script adds search, expand/collapse all, and `#expand=ID` in the address to open one node
and its ancestors. Tool calls and cells start open, sub-calls start closed under their cell. Each node shows
its time, and for tool calls and cells the tokens and cost of the sub-calls beneath them; errors are red.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from rlm_mcp.trace import read_events

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


def _money(cost: float | None) -> str:
    return "cost unknown" if cost is None else f"${cost:.4f}"


def _subtotals(events: list[dict[str, Any]], children: dict[Any, list[dict[str, Any]]]) -> dict[int, dict[str, Any]]:
    """Tokens and cost of the sub-calls at or beneath each event."""
    totals: dict[int, dict[str, Any]] = {}

    def walk(event: dict[str, Any]) -> dict[str, Any]:
        own = {"calls": 0, "input": 0, "output": 0, "cost": 0.0, "unknown_cost": False}
        if event["type"] == "sub_call":
            own.update(calls=1, input=event.get("input_tokens") or 0, output=event.get("output_tokens") or 0)
            own["cost"] = event.get("cost_usd") or 0.0
            own["unknown_cost"] = event.get("cost_usd") is None and not event.get("error")
        for child in children.get(event["id"], []):
            sub = walk(child)
            for key in ("calls", "input", "output", "cost"):
                own[key] += sub[key]
            own["unknown_cost"] = own["unknown_cost"] or sub["unknown_cost"]
        totals[event["id"]] = own
        return own

    for event in events:
        if event.get("parent") is None:
            walk(event)
    return totals


def _block(label: str, text: Any) -> str:
    if text in (None, "", [], {}):
        return ""
    if not isinstance(text, str):
        text = json.dumps(text, ensure_ascii=False, indent=1)
    return f'<div class="label">{html.escape(label)}</div><pre>{html.escape(text)}</pre>'


BODY_FIELDS = {
    "tool": (("arguments", "arguments"), ("outcome", "outcome")),
    "cell": (("code", "code"), ("stdout", "stdout"), ("stderr", "stderr"), ("result", "value"), ("error", "error")),
    "sub_call": (("system", "system"), ("prompt", "prompt"), ("answer", "answer"), ("error", "error")),
}


def _node(event: dict[str, Any], children: dict[Any, list[dict[str, Any]]], totals: dict[int, dict[str, Any]]) -> str:
    kind = str(event.get("type", "event"))
    total = totals.get(event["id"], {})
    meta = [f"{event.get('elapsed_s', 0):.3f} s"]
    if kind == "sub_call":
        meta.append(f"{event.get('model', '?')} via {event.get('backend', '?')}")
        meta.append(f"{event.get('input_tokens') or 0:,} in / {event.get('output_tokens') or 0:,} out tokens")
        meta.append(_money(event.get("cost_usd")))
        if event.get("cached"):
            meta.append("cache hit")
        if (event.get("attempts") or 1) > 1:
            meta.append(f"{event['attempts']} attempts")
    elif total.get("calls"):
        cost = _money(total["cost"]) + (" + unknown" if total["unknown_cost"] else "")
        meta.append(f"{total['calls']} sub-calls, {total['input']:,} in / {total['output']:,} out tokens, {cost}")
    error = event.get("error")
    body = "".join(_block(label, event.get(field)) for field, label in BODY_FIELDS.get(kind, ()))
    inner = "".join(_node(child, children, totals) for child in children.get(event["id"], []))
    searchable = json.dumps({k: v for k, v in event.items() if isinstance(v, (str, dict, list))}, ensure_ascii=False)
    classes = f"{kind}{' error' if error else ''}"
    opened = "" if kind == "sub_call" else " open"
    first_line = str(error).strip().splitlines()[-1] if error else ""
    return (
        f'<details class="{classes}" id="n{event["id"]}" data-search="{html.escape(searchable.lower())}"{opened}>'
        f'<summary><span class="kind">{html.escape(kind)}</span>{html.escape(str(event.get("name", "")))}'
        f'<span class="meta">{html.escape(" · ".join(meta))}</span>'
        + (f'<span class="err">{html.escape(first_line[:160])}</span>' if error else "")
        + f"</summary>{body}{inner}</details>"
    )


def render(events: list[dict[str, Any]], title: str) -> str:
    children: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    known = {event["id"] for event in events}
    roots = []
    for event in sorted(events, key=lambda e: e["id"]):
        if event.get("parent") in known:
            children[event["parent"]].append(event)
        else:
            roots.append(event)
    totals = _subtotals(events, children)
    sub_calls = [e for e in events if e.get("type") == "sub_call"]
    cost_known = sum(e.get("cost_usd") or 0.0 for e in sub_calls)
    summary = (
        f"{sum(e.get('type') == 'tool' for e in events)} tool calls · {sum(e.get('type') == 'cell' for e in events)} "
        f"cells · {len(sub_calls)} sub-calls · {sum(e.get('input_tokens') or 0 for e in sub_calls):,} in / "
        f"{sum(e.get('output_tokens') or 0 for e in sub_calls):,} out tokens · {_money(cost_known)} · "
        f"{sum(1 for e in events if e.get('error'))} errors · "
        f"{sum(e.get('elapsed_s') or 0 for e in roots):.2f} s in tool calls"
    )
    nodes = "".join(_node(root, children, totals) for root in roots)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
        f'<h1>{html.escape(title)}</h1><div class="totals" id="totals">{html.escape(summary)}</div>'
        '<div class="controls"><input id="q" type="search" placeholder="Search code, prompts, answers, errors" '
        'oninput="search(this.value)"> <button onclick="setAll(true)">Expand all</button> '
        '<button onclick="setAll(false)">Collapse all</button> <span id="matches"></span></div>'
        f'<main id="tree">{nodes}</main></body></html>'
    )


def write_html(trace: Path, output: Path) -> int:
    """Render `trace` into `output`; returns the number of events."""
    events = read_events(trace)
    output.write_text(render(events, f"rlm-mcp trace: {trace.parent.name or trace.name}"), encoding="utf-8")
    return len(events)
