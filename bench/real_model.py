"""The long-context tasks with a real root model and real sub-models: accuracy, tokens and cost. Not run in CI.

Why: the scripted strategies of bench_tasks.py show what the server does with competent code; this driver
shows what a real model makes of the tools. It starts rlm-mcp over stdio, offers the model the server's own
tools (names, descriptions and schemas from tools/list, and its instructions as the system prompt), runs
the tool calls the model makes through the MCP client, and checks the final answer against the generated
truth. Sub-calls inside the REPL go wherever rlm-mcp sends them (ANTHROPIC_API_KEY, or
RLM_MCP_OPENAI_BASE_URL for an OpenAI-compatible endpoint such as Ollama).

Needs ANTHROPIC_API_KEY (the root model is Claude; `--root-model` picks which). Example:
  ANTHROPIC_API_KEY=... python bench/real_model.py --root-model claude-sonnet-4-6 --niah-mb 10 --records 2000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anthropic
import anyio
from mcp import Client, StdioServerParameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import tasks
from bench.report import print_report
from rlm_mcp.llm.pricing import cost_usd, price_of

MAX_TURNS = 30


async def solve(task: tasks.Task, root: Path, model: str) -> dict[str, Any]:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "rlm_mcp", "--root", str(root), "--workspace", str(root / "ws")],
        env=dict(os.environ),
    )
    started = time.perf_counter()
    root_in = root_out = 0
    async with anthropic.AsyncAnthropic() as llm, Client(params) as client:
        listed = await client.list_tools()
        tools = [
            {"name": tool.name, "description": tool.description or "", "input_schema": tool.input_schema}
            for tool in listed.tools
        ]
        messages: list[dict[str, Any]] = [
            {
                "role": "user",
                "content": f"The file {task.file.name} is under your allowed root. {task.question} "
                "Use the tools; end with the answer alone on the last line.",
            }
        ]
        final = ""
        for _ in range(MAX_TURNS):
            reply = await llm.messages.create(
                model=model, max_tokens=4096, system=client.instructions or "", tools=tools, messages=messages
            )
            root_in += reply.usage.input_tokens
            root_out += reply.usage.output_tokens
            messages.append({"role": "assistant", "content": [block.model_dump() for block in reply.content]})
            uses = [block for block in reply.content if block.type == "tool_use"]
            if not uses:
                final = "".join(block.text for block in reply.content if block.type == "text")
                break
            results = []
            for use in uses:
                result = await client.call_tool(use.name, dict(use.input))
                text = "".join(block.text for block in result.content if block.type == "text")
                results.append(
                    {"type": "tool_result", "tool_use_id": use.id, "content": text, "is_error": result.is_error}
                )
            messages.append({"role": "user", "content": results})
        usage = json.loads((await client.read_resource("rlm://session/usage")).contents[0].text)["total"]  # type: ignore[union-attr]
    last_line = final.strip().splitlines()[-1] if final.strip() else ""
    return {
        "correct": json.dumps(task.expected) in final or str(task.expected) in last_line,
        "elapsed": time.perf_counter() - started,
        "root_tokens": (root_in, root_out),
        "root_cost": cost_usd(price_of(model), root_in, root_out),
        "sub": usage,
    }


async def main(args: argparse.Namespace) -> None:
    if not os.environ.get("ANTHROPIC_API_KEY"):
        sys.exit("real_model.py needs ANTHROPIC_API_KEY for the root model (see the module docstring)")
    rows = []
    with tempfile.TemporaryDirectory() as name:
        root = Path(name)
        for task in (
            tasks.make_niah(root, args.niah_mb * 1_000_000, seed=1),
            tasks.make_oolong(root, args.records, seed=2),
            tasks.make_pairs(root, max(50, args.records // 10), seed=3),
        ):
            result = await solve(task, root, args.root_model)
            sub = result["sub"]
            cost = (result["root_cost"] or 0.0) + sub["cost_usd"]
            rows.append(
                (
                    task.name,
                    f"{'correct' if result['correct'] else 'wrong'}; {result['elapsed']:.0f} s",
                    "correct",
                    f"root {result['root_tokens'][0]:,} in / {result['root_tokens'][1]:,} out tokens",
                    f"{sub['calls']} sub-calls, {sub['input_tokens']:,} in / {sub['output_tokens']:,} out; ${cost:.4f}",
                )
            )
    print_report(f"real models (root {args.root_model})", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root-model", default="claude-sonnet-4-6")
    parser.add_argument("--niah-mb", type=int, default=10)
    parser.add_argument("--records", type=int, default=2000)
    anyio.run(main, parser.parse_args())
