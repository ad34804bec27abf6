"""Measure what a child RLM costs before it does anything: rlm_query against a plain llm_query.

Why: a child is a session of its own (a fresh sandboxed worker, its context loaded there) plus its root's
first turn, so it must be cheap next to the model calls it makes, or recursion would only be worth it for
the largest pieces. Measured from REPL code in the client's session (the server in memory, the fake
Anthropic API of the test suite on loopback, no latency): the plain sub-call (baseline, the same run), a
child whose root answers at once, and the time from rlm_query to the child's first cell running.

Run: python bench/bench_children.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import anyio
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report
from rlm_mcp.config import load_settings
from rlm_mcp.surface.server import build_server
from testkit.fakes import FakeProvider
from testkit.roots import ScriptedRoot, code

TIMED = """\
import time
times = []
for _ in range({n}):
    started = time.time()
    reply = {call}
    times.append(({end}) - started)
print(sorted(times)[len(times) // 2])
"""


async def median(client: Client, call: str, n: int, end: str = "time.time()") -> float:
    result = await client.call_tool("run_code", {"code": TIMED.format(n=n, call=call, end=end)})
    data = result.structured_content or {}
    if data.get("outcome") != "ok":
        raise RuntimeError(result.content[0].text)  # type: ignore[union-attr]
    return float(str(data["stdout"]).strip())


async def main(quick: bool) -> None:
    n = 5 if quick else 15
    root = ScriptedRoot(
        {"Answer now": ["done"], "First cell": [code("import time\nanswer = repr(time.time())")]},
        sub_answer=lambda prompt, system, model: "ok",
    )
    async with FakeProvider.running(answer=root) as fake:
        os.environ.update(ANTHROPIC_API_KEY="bench-key", ANTHROPIC_BASE_URL=fake.base_url)
        with tempfile.TemporaryDirectory() as name:
            settings = load_settings(
                {"roots": [name], "workspace": Path(name) / "ws", "structured_content": True, "timeout_s": 300},
                environ={},
            )
            async with Client(build_server(settings)) as client:
                await median(client, "llm_query(f'warm up {time.time()}')", 2)
                plain = await median(client, "llm_query(f'hello {time.time()}')", n)  # never cached
                answered = await median(client, "rlm_query('Answer now', 'some context')", n)
                first_cell = await median(client, "rlm_query('First cell', 'some context')", n, "float(reply)")
    rows = [
        ("plain sub-call (llm_query), median", f"{plain * 1000:.1f} ms", "", "baseline", "1.0x"),
        ("child RLM whose root answers at once", f"{answered * 1000:.0f} ms", "", f"{plain * 1000:.1f} ms",
         f"{answered / plain:.0f}x"),
        ("rlm_query to the child's first cell", f"{first_cell * 1000:.0f} ms", "", f"{plain * 1000:.1f} ms",
         f"{first_cell / plain:.0f}x"),
    ]  # fmt: skip
    print_report(f"child RLM overhead (median of {n})", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    anyio.run(main, parser.parse_args().quick)
