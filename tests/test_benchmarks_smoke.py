"""The benchmarks still run: a small slice, as CI's smoke test. Timings are printed, never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_long_context_tasks_are_solved_end_to_end() -> None:
    done = subprocess.run(
        [sys.executable, "bench/bench_tasks.py", "--smoke"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for task in ("S-NIAH, 1,000,000 chars", "OOLONG counts, 500 records", "pairs, 200 records"):
        row = next(line for line in done.stdout.splitlines() if task in line)
        assert "| correct;" in row, row


def test_run_all_writes_every_section(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    done = subprocess.run(
        # bench_tasks.py --smoke has a test of its own, above; bench_contexts.py writes 100 MB
        [
            sys.executable,
            "bench/run_all.py",
            "--smoke",
            "--output",
            str(output),
            "--skip",
            "bench_contexts.py",
            "bench_tasks.py",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = output.read_text()
    assert text.startswith("# Benchmarks\n\nWritten by `python3 bench/run_all.py --smoke`")
    titles = ("## Core", "## Sub-calls", "## Sandbox", "## Sessions", "## Child RLMs")
    for title in (*titles, "## Memory"):
        assert title in text
    assert "**Failed**" not in text and text.count("| measurement | value | target | baseline | ratio |") == 6
    assert "| all | pass 2 / pass 1 |" in text  # the memory study's table
