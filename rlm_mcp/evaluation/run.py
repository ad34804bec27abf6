"""`rlm-mcp eval`: S-NIAH, OOLONG-style counting and pairs through `ask` at each depth, against the plain model.

The plain model is the root model given the whole input in one call, where it fits its window (otherwise
the row says it does not fit); the RLM rows are `rlm-mcp ask` with --max-depth 1 (llm_query only) and 2
(children through rlm_query). One table: accuracy, root and sub tokens, cost and wall time per task and
method. Models come from the same settings as the server's (ANTHROPIC_API_KEY, RLM_MCP_OPENAI_BASE_URL).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from rlm_mcp.config import Settings, SettingsError, load_settings
from rlm_mcp.engine.ask import AskError, ask
from rlm_mcp.evaluation import tasks
from rlm_mcp.evaluation.report import print_report
from rlm_mcp.llm.pricing import estimate_tokens, window_of
from rlm_mcp.llm.router import Router, SessionLLM
from rlm_mcp.llm.types import SubCallError

COLUMNS = ("task", "method", "correct", "root tokens in / out", "sub tokens in / out", "cost", "wall s")
PLAIN_MAX_TOKENS = 1_024


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm-mcp eval", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="niah,oolong,pairs", help="which tasks, comma-separated")
    parser.add_argument("--niah-mb", default="1", help="S-NIAH input sizes in MB, comma-separated (1 to 1000)")
    parser.add_argument("--records", type=int, default=2_000, help="OOLONG records")
    parser.add_argument("--people", type=int, default=200, help="people in the pairs task")
    parser.add_argument("--depths", default="1,2", help="--max-depth values to run `ask` at")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain model on the whole input")
    parser.add_argument("--model", help="root model (and the plain model); default: the sub-model")
    parser.add_argument("--sub-model", help="model of llm_query inside the REPL")
    parser.add_argument("--workspace", type=Path, help="where sessions live while they run")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON lines, not a table")
    parser.add_argument(
        "--study",
        choices=["memory"],
        help="memory: OOLONG counting over --inputs inputs, without then with the handbook the first pass built",
    )
    parser.add_argument("--inputs", type=int, default=4, help="with --study memory: how many inputs")
    return parser


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


def _row(task: tasks.Task, result: dict[str, Any]) -> tuple[str, ...]:
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


def _study(settings: Settings, args: argparse.Namespace) -> int:
    from rlm_mcp.evaluation.study import COLUMNS as STUDY_COLUMNS
    from rlm_mcp.evaluation.study import memory_study, study_row, totals

    rows = anyio.run(memory_study, settings, args)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        title = f"eval --study memory (OOLONG counting, {args.records:,} records, {args.inputs} inputs, two passes)"
        print_report(title, [*(study_row(row) for row in rows), *totals(rows)], STUDY_COLUMNS)
    return 0


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    overrides = {"root_model": args.model, "sub_model": args.sub_model, "workspace": args.workspace}
    try:
        # Each run starts from nothing: an earlier run's handbook or cached answers would flatter the later ones.
        settings = load_settings(overrides).model_copy(update={"memory": "off"})
        if args.study == "memory":
            return _study(settings, args)
        done = anyio.run(evaluate, settings, args)
    except (SettingsError, AskError) as exc:
        print(f"rlm-mcp eval: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for task, result in done:
            print(json.dumps({"task": task.name, **result}))
    else:
        print_report("eval (long-context tasks through `ask`)", [_row(task, result) for task, result in done], COLUMNS)
    return 0
