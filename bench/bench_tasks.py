"""The RLM literature's long-context tasks, end to end through the real MCP client, with a fake sub-model.

Why: the point of an RLM server is that a root model answers questions about inputs far larger than its
window while seeing little of them. Each task (rlm_mcp/evaluation/tasks.py) is generated deterministically, loaded with
`load_context`, and solved by the fixed cells a competent root model would send; the sub-model is a fake on
loopback (bench/provider_process.py) that answers from the chunk it receives. Reported per task: whether the
answer is right, the tool calls, the characters the root model received against the size of the context,
the sub-calls and their tokens (from rlm://session/usage), and the wall time.

Run: python bench/bench_tasks.py [--quick | --smoke | --full]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.provider_process import ProviderProcess
from bench.report import print_report
from rlm_mcp.evaluation import tasks

MB = 1_000_000


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def server(provider_url: str, root: Path) -> StdioServerParameters:
    args = ["-m", "rlm_mcp", "--root", str(root), "--workspace", str(root / "ws"), "--timeout-s", "600"]
    args += ["--max-concurrency", "16", "--max-sub-calls", "100000", "--structured-content"]
    args += ["--confirm-batch-usd", "1e6"]  # fake sub-models cost nothing; the estimate would ask to confirm
    env = {**os.environ, "ANTHROPIC_API_KEY": "bench", "ANTHROPIC_BASE_URL": provider_url}
    return StdioServerParameters(command=sys.executable, args=args, env=env)


async def solve(provider_url: str, root: Path, task: tasks.Task) -> dict[str, Any]:
    received = 0
    calls = 0
    started = time.perf_counter()
    async with Client(server(provider_url, root)) as client:

        async def call(tool: str, arguments: dict[str, Any]) -> Any:
            nonlocal received, calls
            result = await client.call_tool(tool, arguments)
            calls += 1
            text = "".join(block.text for block in result.content if block.type == "text")
            received += len(text)
            if result.is_error:
                raise RuntimeError(f"{tool} failed: {text[:500]}")
            return result.structured_content or {}

        await call("load_context", {"path": task.file.name})
        for cell in task.strategy:
            await call("run_code", {"code": cell})
        # The harness checks the answer by its digest: a long answer (thousands of pairs) would be elided.
        digest = "import hashlib, json\nhashlib.sha256(json.dumps(answer, sort_keys=True).encode()).hexdigest()"
        answer = await call("run_code", {"code": digest})
        elapsed = time.perf_counter() - started
        usage = json.loads((await client.read_resource("rlm://session/usage")).contents[0].text)["total"]  # type: ignore[union-attr]
    expected = hashlib.sha256(json.dumps(task.expected, sort_keys=True).encode()).hexdigest()
    return {
        "correct": answer["result"] == repr(expected),
        "calls": calls,
        "received": received,
        "elapsed": elapsed,
        "usage": usage,
    }


def _share(part: int, whole: int) -> str:
    share = part / whole
    return f"{share:.2%}" if share >= 0.0001 else f"{share:.5%}"


async def main(mode: str) -> None:
    niah, oolong, pairs = tasks.make_niah, tasks.make_oolong, tasks.make_pairs
    plans: list[tuple[str, Any, int]] = {
        "smoke": [("niah", niah, 1 * MB), ("oolong", oolong, 500), ("pairs", pairs, 200)],
        "quick": [("niah", niah, 10 * MB), ("oolong", oolong, 5_000), ("pairs", pairs, 1_000)],
        "default": [
            ("niah", niah, 1 * MB),
            ("niah", niah, 10 * MB),
            ("niah", niah, 100 * MB),
            ("oolong", oolong, 20_000),
            ("pairs", pairs, 2_000),
        ],
        "full": [
            ("niah", niah, 1 * MB),
            ("niah", niah, 100 * MB),
            ("niah", niah, 1000 * MB),
            ("oolong", oolong, 100_000),
            ("pairs", pairs, 5_000),
        ],
    }[mode]
    rows = []
    with tempfile.TemporaryDirectory() as name, ProviderProcess("py:rlm_mcp.evaluation.tasks:answer") as provider:
        root = Path(name)
        for label, make, size in plans:
            task = make(root, size, seed=size)
            context_chars = task.file.stat().st_size
            result = await solve(provider.base_url, root, task)
            usage = result["usage"]
            log(f"{label} {size:,}: {result}")
            unit = "chars" if label == "niah" else "records"
            sub_calls = f"{usage['calls']:,} sub-calls ({usage['input_tokens']:,} in / {usage['output_tokens']:,} out)"
            rows.append(
                (
                    f"{task.name}, {size:,} {unit}",
                    f"{'correct' if result['correct'] else 'WRONG'}; {result['elapsed']:.2f} s; "
                    f"{result['calls']} tool calls; {sub_calls}",
                    "correct",
                    f"context {context_chars:,} chars",
                    f"root saw {result['received']:,} chars ({_share(result['received'], context_chars)})",
                )
            )
            task.file.unlink()
    print_report(f"long-context tasks ({mode})", rows)
    if any(row[1].startswith("WRONG") for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--smoke", action="store_const", const="smoke", dest="mode", help="tiny sizes, for CI")
    group.add_argument("--quick", action="store_const", const="quick", dest="mode", help="10 MB and thousands")
    group.add_argument("--full", action="store_const", const="full", dest="mode", help="up to 1 GB")
    anyio.run(main, parser.parse_args().mode or "default")
