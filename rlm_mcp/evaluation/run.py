"""`rlm-mcp eval`: S-NIAH, OOLONG-style counting and pairs through `ask` at each depth, against the plain model.

The plain model is the root model given the whole input in one call, where it fits its window (otherwise
the row says it does not fit); the RLM rows are `rlm-mcp ask` with --max-depth 1 (llm_query only) and 2
(children through rlm_query). One table: accuracy, root and sub tokens, cost and wall time per task and
method. Models come from the same settings as the server's (ANTHROPIC_API_KEY, RLM_MCP_OPENAI_BASE_URL).
The command itself (its flags, the table or JSON it prints) is rlm_mcp/commands/eval.py.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp.config import Settings
from rlm_mcp.engine.ask import ask
from rlm_mcp.errors import SubCallError
from rlm_mcp.evaluation import tasks
from rlm_mcp.llm.pricing import estimate_tokens, window_of
from rlm_mcp.llm.router import Router, SessionLLM

COLUMNS = ("task", "method", "correct", "root tokens in / out", "sub tokens in / out", "cost", "wall s")
PLAIN_MAX_TOKENS = 1_024


def make_tasks(directory: Path, args: argparse.Namespace) -> list[tasks.Task]:
    made: list[tasks.Task] = []
    wanted = {name.strip() for name in args.tasks.split(",")}
    if "niah" in wanted:
        made += [tasks.make_niah(directory, int(float(mb) * 1_000_000), seed=1) for mb in args.niah_mb.split(",")]
    if "oolong" in wanted:
        made.append(tasks.make_oolong(directory, args.records, seed=2))
    if "pairs" in wanted:
        made.append(tasks.make_pairs(directory, args.people, seed=3))
    return made


async def plain(settings: Settings, task: tasks.Task) -> dict[str, Any]:
    """The root model with the whole input in its prompt, if it fits the model's window."""
    router = Router(settings)
    started = time.monotonic()
    try:
        backend = await router.backend_for(None)
        model = settings.root_model or settings.sub_model or backend.default_model or "default"
        size = task.file.stat().st_size
        window = window_of(model, settings.sub_window_tokens)
        if size // 2 > window * 4:  # far too big to read, let alone to send
            return {"method": "plain", "skipped": f"does not fit ({size:,} bytes; {window:,}-token window)"}
        text = await anyio.to_thread.run_sync(task.file.read_text, "utf-8")
        prompt = f"<input>\n{text}\n</input>\n\n{task.question} Answer briefly."
        tokens = estimate_tokens(prompt)
        if tokens + PLAIN_MAX_TOKENS > window:
            return {"method": "plain", "skipped": f"does not fit (~{tokens:,} tokens; {window:,}-token window)"}
        llm = SessionLLM(router)
        answer = await llm.complete(llm.make_call(backend, prompt, None, model, PLAIN_MAX_TOKENS), backend)
        completion = answer.completion
        return {
            "method": "plain",
            "correct": task.check(completion.text),
            "root": [completion.input_tokens, completion.output_tokens],
            "sub": [0, 0],
            "cost_usd": answer.cost_usd,
            "elapsed_s": time.monotonic() - started,
        }
    except SubCallError as exc:
        return {"method": "plain", "skipped": f"failed: {exc}"}
    finally:
        await router.aclose()


async def rlm(settings: Settings, task: tasks.Task, depth: int) -> dict[str, Any]:
    result = await ask(settings.model_copy(update={"max_depth": depth}), [str(task.file)], task.question)
    sub = result.sub
    return {
        "method": f"RLM, depth {depth}",
        "correct": task.check(result.answer),
        "stopped": result.stopped,
        "root": [result.root.input_tokens, result.root.output_tokens],
        "sub": [sub.input_tokens, sub.output_tokens],
        "cost_usd": result.total.cost_usd,
        "elapsed_s": result.elapsed_s,
        "answer": result.answer[:200],
    }


def table_row(task: tasks.Task, result: dict[str, Any]) -> tuple[str, ...]:
    name = f"{task.name} ({result['bytes'] / 1e6:,.1f} MB)"
    if "skipped" in result:
        return (name, result["method"], result["skipped"], "", "", "", "")
    cost = result["cost_usd"]
    correct = "yes" if result["correct"] else "no" + (f" ({result['stopped']})" if result.get("stopped") else "")
    return (
        name,
        result["method"],
        correct,
        f"{result['root'][0]:,} / {result['root'][1]:,}",
        f"{result['sub'][0]:,} / {result['sub'][1]:,}",
        "unknown" if cost is None else f"${cost:.4f}",
        f"{result['elapsed_s']:.1f}",
    )


async def evaluate(settings: Settings, args: argparse.Namespace) -> list[tuple[tasks.Task, dict[str, Any]]]:
    depths = [int(depth) for depth in args.depths.split(",")]
    done: list[tuple[tasks.Task, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="rlm-mcp-eval-") as name:
        directory = Path(name)
        for task in make_tasks(directory, args):
            size = task.file.stat().st_size
            print(f"[eval] {task.name}: {size:,} bytes", file=sys.stderr, flush=True)
            if not args.no_plain:
                done.append((task, {"bytes": size, **await plain(settings, task)}))
            for depth in depths:
                done.append((task, {"bytes": size, **await rlm(settings, task, depth)}))
    return done
