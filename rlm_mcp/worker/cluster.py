"""The REPL's side of maps on a cluster: rlm_map(fn, source) and llm_map(template, source).

Each is one request to the server, which lists the remote source and runs the work on its Ray cluster; the
worker sends the function's source (it has no network, and cannot reach the cluster) and gets the results.
On the nodes the function runs locked down as this REPL is (worker/mapchild.py); a layer a node could not
apply is said on stderr, so the model reads it with the results.
"""

from __future__ import annotations

import inspect
import sys
import textwrap
from typing import Any

from rlm_mcp.bridge import ops
from rlm_mcp.worker.errors import MapError

NOTE_PATHS = 3  # the paths a note names; the rest are counted


def _say_notes(results: list[dict[str, Any]]) -> None:
    """Each note the results carry (a value that was not JSON, kept as its repr), once, with its paths."""
    paths: dict[str, list[str]] = {}
    for item in results:
        if isinstance(item.get("note"), str):
            paths.setdefault(item["note"], []).append(str(item.get("path")))
    for note, where in paths.items():
        more = f" and {len(where) - NOTE_PATHS:,} more" if len(where) > NOTE_PATHS else ""
        print(f"rlm_map: {note}: {', '.join(where[:NOTE_PATHS])}{more}", file=sys.stderr)


def make_cluster_functions(channel: Any, llm_error: type[Exception]) -> dict[str, Any]:
    def ask(message: dict[str, Any]) -> list[dict[str, Any]]:
        reply = channel.request({"op": ops.MAP, **message})
        if "results" not in reply:
            raise MapError(str(reply.get("error", "the map failed")))
        if reply.get("sandbox"):
            print(f"rlm_map: sandbox gaps on the cluster's nodes: {reply['sandbox']}", file=sys.stderr)
        results = list(reply["results"])
        _say_notes(results)
        return results

    def rlm_map(fn: Any, source: str) -> dict[str, Any]:
        """Run fn(text, path) on every object of a remote source (a URL or glob under --allow-url), on the
        server's Ray cluster next to the data; {path: result}, a failed one as a MapError. fn must be a
        def whose body holds its own imports (the REPL's helpers are there; its variables are not)."""
        if not callable(fn) or not isinstance(source, str):
            raise TypeError("rlm_map(fn, source): a function defined with def, and a URL or glob str")
        try:
            code = textwrap.dedent(inspect.getsource(fn))
        except (OSError, TypeError):
            raise TypeError("rlm_map needs a function defined with def in a cell (its source is sent)") from None
        items = ask({"kind": "function", "source": source, "code": code, "name": fn.__name__})
        return {
            str(item.get("path")): item.get("value")
            if item.get("ok")
            else MapError(str(item.get("error")), str(item.get("path")))
            for item in items
        }

    def llm_map(
        template: str, source: str, *, model: str | None = None, max_tokens: int | None = None, confirm: bool = False
    ) -> dict[str, Any]:
        """A sub-model's answer to `template` ({text}: an object's text, {path}: its URL) for every object of a
        remote source, read on the cluster, asked through this session's budget; {path: answer}, failures as
        LLMError."""
        if not isinstance(template, str) or "{text}" not in template or not isinstance(source, str):
            raise TypeError("llm_map(template, source): a str holding {text}, and a URL or glob str")
        items = ask({"kind": "llm", "source": source, "template": template, "model": model,
                     "max_tokens": max_tokens, "confirm": bool(confirm)})  # fmt: skip
        return {
            str(item.get("path")): item.get("text") if item.get("ok") else llm_error(str(item.get("error")))
            for item in items
        }

    return {"rlm_map": rlm_map, "llm_map": llm_map, "MapError": MapError}
