"""`rlm-mcp replay TRACE`: re-run a session's cells against its recorded sub-call answers, and say where the
outcome differs. A regression test for a user's own analysis: no model is needed, so it runs anywhere, for
free, and a difference means the code, the data or rlm-mcp changed, never the model's mood.

The replay is a fresh server of the operator's settings with a temporary workspace and no memory (so it
neither reads nor changes the user's workspace, and no cached answer stands in for the recording) whose
one backend answers from the trace; see run.py for the driving and comparing, record.py for reading the
trace, backend.py for the answering. Exit 0: every step the same; 1: something differs, or could not be
replayed; 2: bad input (no such file, not a trace, bad flags).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

DESCRIPTION = (
    "Re-run a session's tool calls (load_context, run_code, sub_query, child RLMs) against the sub-call answers "
    "its trace recorded, with no model and no API key, and report each cell that now differs (outcome, stdout, "
    "stderr, value, error, number of sub-calls). Exit 0: all the same; 1: something differs; 2: bad input. "
    "Settings (sandbox, limits) come from the environment as for the server; the workspace is a temporary one."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlm-mcp replay", description=DESCRIPTION)
    parser.add_argument("trace", type=Path, metavar="TRACE", help="a session's trace.jsonl")
    parser.add_argument(
        "--root",
        dest="roots",
        action="append",
        type=Path,
        metavar="DIR",
        help="directory load_context may read from, as for the server; repeat for several "
        "[env RLM_MCP_ROOTS; default: the working directory]",
    )
    parser.add_argument(
        "--timeout-s", type=float, metavar="SECONDS", help="time limit of a cell whose call set none (as the server's)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--save-trace", type=Path, metavar="FILE", help="also write the replay's own trace there (see rlm-mcp trace)"
    )
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from rlm_mcp.errors import TraceError
    from rlm_mcp.replay.record import load

    try:
        recording = load(args.trace)
    except TraceError as exc:
        print(f"rlm-mcp replay: {exc}", file=sys.stderr)
        return 2

    if args.save_trace is not None:  # a path that cannot be written is said now, not after the whole replay
        try:
            args.save_trace.touch()
        except OSError as exc:
            print(f"rlm-mcp replay: cannot write --save-trace {args.save_trace}: {exc.strerror}", file=sys.stderr)
            return 2

    import anyio  # deferred past the trace's checks: bad input is refused at once

    from rlm_mcp.config import load_settings
    from rlm_mcp.errors import SettingsError
    from rlm_mcp.replay.report import render_json, render_text
    from rlm_mcp.replay.run import replay

    with tempfile.TemporaryDirectory(prefix="rlm-mcp-replay-") as workspace:
        overrides = {
            "roots": args.roots,
            "timeout_s": args.timeout_s,
            "workspace": Path(workspace),
            "memory": "off",  # no handbook offered, no answer cached: the recording answers every call
            "distill": "off",
            "resume": False,
            "transport": "stdio",
            "structured_content": True,  # to see when a cell is still running
        }
        try:
            settings = load_settings(overrides).model_copy(update={"sub_model": None})
        except SettingsError as exc:
            print(f"rlm-mcp replay: {exc}", file=sys.stderr)
            return 2
        report = anyio.run(replay, recording, settings, args.save_trace)
    print(render_json(report) if args.json else render_text(report))
    return report.exit_code
