"""`rlm-mcp eval --study memory`: what the workspace memory changes on a family of similar tasks.

OOLONG-style counting over several different inputs, run twice through `ask`. The first pass has no
handbook: each task runs in an empty memory of its own, and distils what it did when it ends. Their
behaviors and findings are then merged into one memory, and the second pass runs every task again with
it (distillation off, so the second pass's tasks do not teach one another). The cross-session answer
cache is off in both passes: this measures what is learnt, not what is replayed. Reported per task and
pass: correctness, the root model's tool calls, the characters it was given to read, its tokens, the
sub-calls and their tokens, and (first pass) what the distillation cost.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from pathlib import Path
from typing import Any

from rlm_mcp.config import Settings
from rlm_mcp.engine.ask import ask
from rlm_mcp.evaluation import tasks
from rlm_mcp.memory import findings, handbook
from rlm_mcp.memory.database import Database
from rlm_mcp.memory.inputs import InputRef

COLUMNS = (
    "input",
    "pass",
    "correct",
    "root tool calls",
    "chars root read",
    "root tokens in / out",
    "sub-calls",
    "sub tokens in / out",
    "distillation calls / tokens",
)
FIRST, SECOND = "1: no handbook", "2: with pass 1's memory"


def merge_memory(source: Path, target: Database) -> None:
    """Copy one workspace's behaviors (merged, as an import is) and findings into another memory."""
    database = Database(source)

    def read(connection: sqlite3.Connection) -> tuple[list[handbook.Behavior], list[dict[str, Any]]]:
        return handbook.all_behaviors(connection, with_sources=True), findings.listed(connection)

    behaviors, found = database.run(read)
    database.close()

    def write(connection: sqlite3.Connection) -> None:
        for behavior in behaviors:
            sessions = ",".join(sorted({str(s["session"]) for s in behavior.sources}))
            # Approved: the person running the study takes what its first pass learnt (review is not measured).
            handbook.add(connection, behavior, sessions or "merged", approved=True)
        for item in found:
            ref = InputRef(item["kind"], int(item["size"]))
            text, session, origin, source = item["text"], item["session"], item["origin"], item["source"]
            findings.add(connection, item["digest"], ref, text, session, origin, source, approved=True)

    target.run(write)


async def run_task(settings: Settings, task: tasks.Task, workspace: Path, distill: str) -> dict[str, Any]:
    run_settings = settings.model_copy(
        update={"workspace": workspace, "memory": "on", "distill": distill, "cache_days": 0.0, "max_depth": 1}
    )
    result = await ask(run_settings, [str(task.file)], task.question)
    return {
        "correct": task.check(result.answer),
        "tool_calls": result.tool_calls,
        "read_chars": result.read_chars,
        "root": [result.root.input_tokens, result.root.output_tokens],
        "sub_calls": result.sub.calls,
        "sub": [result.sub.input_tokens, result.sub.output_tokens],
        "learning": [result.learning.calls, result.learning.input_tokens + result.learning.output_tokens],
    }


async def memory_study(settings: Settings, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rlm-mcp-study-") as name:
        directory = Path(name)
        family = []
        for index in range(args.inputs):
            folder = directory / f"input-{index + 1}"
            folder.mkdir()
            family.append(tasks.make_oolong(folder, args.records, seed=100 + index))
        shared = Database(directory / "shared")
        for index, task in enumerate(family):
            print(f"[study] pass 1, input {index + 1}", file=sys.stderr, flush=True)
            alone = directory / f"memory-{index + 1}"
            rows.append({"input": index + 1, "pass": FIRST, **await run_task(settings, task, alone, "on-close")})
            merge_memory(alone, shared)
        shared.close()
        for index, task in enumerate(family):
            print(f"[study] pass 2, input {index + 1}", file=sys.stderr, flush=True)
            rows.append(
                {"input": index + 1, "pass": SECOND, **await run_task(settings, task, directory / "shared", "off")}
            )
    return rows


def study_row(row: dict[str, Any]) -> tuple[str, ...]:
    learning = f"{row['learning'][0]} / {row['learning'][1]:,}" if row["learning"][0] else ""
    return (
        str(row["input"]),
        row["pass"],
        "yes" if row["correct"] else "no",
        str(row["tool_calls"]),
        f"{row['read_chars']:,}",
        f"{row['root'][0]:,} / {row['root'][1]:,}",
        str(row["sub_calls"]),
        f"{row['sub'][0]:,} / {row['sub'][1]:,}",
        learning,
    )


def totals(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One line per pass with the sums, and the second pass as a ratio of the first."""
    sums: dict[str, dict[str, float]] = {}
    for row in rows:
        total = sums.setdefault(row["pass"], {"tool_calls": 0, "read_chars": 0, "root": 0, "sub_calls": 0, "sub": 0})
        total["tool_calls"] += row["tool_calls"]
        total["read_chars"] += row["read_chars"]
        total["root"] += sum(row["root"])
        total["sub_calls"] += row["sub_calls"]
        total["sub"] += sum(row["sub"])
    if set(sums) != {FIRST, SECOND}:
        return []
    first, second = sums[FIRST], sums[SECOND]

    def ratio(key: str) -> str:
        return f"{second[key] / first[key]:.2f}x" if first[key] else ""

    return [
        ("all", "pass 2 / pass 1", "", ratio("tool_calls"), ratio("read_chars"), ratio("root") + " (in + out)",
         ratio("sub_calls"), ratio("sub") + " (in + out)", ""),
    ]  # fmt: skip
