"""Run every benchmark and rewrite docs/benchmarks.md from what they print: one command, one run, one machine.

Why: figures in a document drift from the code unless the code writes them. Each benchmark prints its own
provenance (command, machine, date) and a Markdown table with its baselines measured in the same run; this
script runs them one after another (never in parallel: they would measure each other), and writes their
reports under one heading each, with the paragraph of the benchmark's docstring that says what it measures.
Commentary on what the numbers mean lives in docs/benchmark-notes.md, written by hand.

Run: python bench/run_all.py [--quick | --smoke] [--output FILE] [--skip NAME ...]
  --quick: every benchmark in its quick mode; --smoke: the smallest sizes, for CI (which must never fail on
  timing: a benchmark fails only when it breaks or a task's answer is wrong). The peer comparison installs
  the peers from PyPI and the CLI benchmark needs the npm CLIs, so both are left out of --smoke.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# (script, title, flags in --quick, flags in --smoke); None in --smoke: left out
BENCHMARKS: list[tuple[str, str, list[str], list[str] | None]] = [
    ("bench_core.py", "Core: stdio round trip, cold start, loading, tools/list", ["--quick"], ["--quick"]),
    ("bench_sub_calls.py", "Sub-calls: batched concurrency and per-call overhead", ["--quick"], ["--quick"]),
    ("bench_sandbox.py", "Sandbox: what the lock-down costs", ["--quick"], ["--quick"]),
    ("bench_contexts.py", "Contexts at scale: load, grep, chunk, search", ["--quick"], ["--quick"]),
    ("bench_sessions.py", "Sessions: snapshot cost and HTTP throughput", ["--quick"], ["--quick"]),
    ("bench_tasks.py", "Long-context tasks through the MCP client", ["--quick"], ["--smoke"]),
    ("bench_children.py", "Child RLMs: what one costs before it works", ["--quick"], ["--quick"]),
    ("bench_memory.py", "Memory across sessions: repeated tasks, and what it costs", ["--quick"], ["--quick"]),
    ("bench_viewer.py", "The trace viewer at 1k, 10k and 100k sub-calls", ["--quick"], None),
    ("bench_replay.py", "Replay: a session re-run from its trace", ["--quick"], None),
    ("bench_cluster.py", "Maps on a Ray cluster: rlm_map and llm_map", ["--quick"], None),
    ("bench_cli_backends.py", "Sub-calls through the Claude Code and Codex CLIs", ["--quick"], None),
    ("bench_peers.py", "Side by side with the peers", ["--quick"], None),
]


def purpose(script: Path) -> str:
    """The docstring's second paragraph (the 'Why'), as the section's introduction."""
    docstring = ast.get_docstring(ast.parse(script.read_text())) or ""
    paragraphs = [p.strip() for p in docstring.split("\n\n") if p.strip()]
    return " ".join(paragraphs[1].split()) if len(paragraphs) > 1 else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--smoke", action="store_true")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--skip", nargs="*", default=[], metavar="NAME", help="e.g. bench_peers.py")
    args = parser.parse_args()

    flag = " --quick" if args.quick else (" --smoke" if args.smoke else "")
    sections = []
    failures = []
    for script_name, title, quick_flags, smoke_flags in BENCHMARKS:
        script = BENCH / script_name
        flags = smoke_flags if args.smoke else (quick_flags if args.quick else [])
        if flags is None or script_name in args.skip or not script.exists():
            continue
        print(f"[run_all] {script_name} {' '.join(flags)}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(script), *flags], cwd=REPO, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            failures.append(script_name)
            report = f"**Failed** (exit {done.returncode}):\n\n```\n{done.stderr.strip()[-3000:]}\n```"
        else:
            report = done.stdout.strip()
        sections.append(f"## {title}\n\n{purpose(script)}\n\n{report}\n\n_{elapsed:.0f} s to run._\n")

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = (
        "# Benchmarks\n\n"
        f"Written by `python3 bench/run_all.py{flag}` on {now}: {platform.platform()}, "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}. Every table below was "
        "made in this one run, its baselines measured beside it; tests never assert timings. These machines are "
        "shared and noisy: read the figures as orders of magnitude and ratios. What the numbers mean, and the "
        "history of changes they drove, is in [benchmark-notes.md](benchmark-notes.md).\n"
    )
    args.output.write_text(header + "\n" + "\n".join(sections))
    print(f"[run_all] wrote {args.output}; failed: {', '.join(failures) or 'none'}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
