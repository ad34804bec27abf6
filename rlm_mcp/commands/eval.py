"""`rlm-mcp eval`: its flags, and the small function that runs the evaluation (rlm_mcp/evaluation/run.py) or
the memory study (rlm_mcp/evaluation/study.py) and prints the table or the JSON lines.

Exit 0: the table was printed (a task that failed is a row saying so); 2: bad settings or an input that
cannot be asked about.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import anyio

from rlm_mcp.config import Settings, load_settings
from rlm_mcp.errors import AskError, SettingsError
from rlm_mcp.evaluation.report import print_report
from rlm_mcp.evaluation.run import COLUMNS, evaluate, table_row

# `rlm-mcp eval --help`'s first line: the evaluation module's own summary.
DESCRIPTION = (
    "`rlm-mcp eval`: S-NIAH, OOLONG-style counting and pairs through `ask` at each depth, against the plain model."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm-mcp eval", description=DESCRIPTION)
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
        print_report(
            "eval (long-context tasks through `ask`)", [table_row(task, result) for task, result in done], COLUMNS
        )
    return 0
