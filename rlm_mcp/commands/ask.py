"""`rlm-mcp ask PATH... QUESTION`: run the whole RLM with a configured root model and print the answer.

Exit 0: answered; 1: failed; 2: bad input (a path, the backend); 3: stopped at a cap with a partial answer.
The answer is the model's words, which a loaded file may steer, so it reaches the terminal through
`printable`. The run itself is rlm_mcp/engine/ask.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from rlm_mcp.config import Settings
from rlm_mcp.engine.ask import ask
from rlm_mcp.errors import AskError
from rlm_mcp.escaping import printable
from rlm_mcp.tools.render import usage_line


def run(settings: Settings, arguments: list[str], as_json: bool, trace_html: Path | None) -> int:
    """Print the answer (stdout) and what it cost (stderr), or the whole result as JSON."""
    if len(arguments) < 2:
        print("rlm-mcp ask: give one or more paths, then the question: rlm-mcp ask logs/ 'why?'", file=sys.stderr)
        return 2
    *paths, question = arguments
    try:
        result = anyio.run(ask, settings, paths, question, trace_html)
    except AskError as exc:
        print(f"rlm-mcp ask: {exc}", file=sys.stderr)
        return 2
    code = 1 if result.stopped == "failed" else (3 if result.partial else 0)
    if as_json:
        print(json.dumps(result.as_json(), ensure_ascii=False))
        return code
    if result.answer:  # the model's words, which a loaded file may steer: no escape reaches the terminal raw
        print("\n".join(printable(line) for line in result.answer.split("\n")))
    how = "answered" if result.stopped in ("answered", "answer variable") else f"stopped ({result.stopped})"
    print(
        f"[{how} in {result.iterations} turns, {result.elapsed_s:.1f} s; root {printable(result.model)}: "
        f"{usage_line(result.root)}; sub-calls: {usage_line(result.sub)}]",
        file=sys.stderr,
    )
    if result.error:
        print(f"rlm-mcp ask: {result.error}", file=sys.stderr)
    return code
