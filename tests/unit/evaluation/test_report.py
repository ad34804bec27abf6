"""The one report format: a provenance line (when, where, which command), then a Markdown table whose empty
cells show a dash, so docs/benchmarks.md can paste any output as it is; and an eval result as one row."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from rlm_mcp.evaluation import report, tasks
from rlm_mcp.evaluation.run import COLUMNS, table_row


def test_the_report_is_provenance_then_a_table_with_dashes_for_empty_cells(capsys: pytest.CaptureFixture[str]) -> None:
    report.print_report("bench", [("startup", "0.2 s", "", "0.3 s", "0.67")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("rlm-mcp bench, ") and " UTC; " in lines[0] and " CPUs; Python " in lines[0]
    assert lines[0].endswith(f"`{shlex.join([sys.executable, *sys.argv])}`")
    assert lines[1:] == [
        "",
        "| measurement | value | target | baseline | ratio |",
        "|---|---|---|---|---|",
        "| startup | 0.2 s | — | 0.3 s | 0.67 |",
    ]


def test_a_report_takes_its_own_columns(capsys: pytest.CaptureFixture[str]) -> None:
    report.print_report("eval", [("a", "b"), ("c", "")], columns=("x", "y"))
    assert capsys.readouterr().out.splitlines()[2:] == ["| x | y |", "|---|---|", "| a | b |", "| c | — |"]


def task(tmp_path: Path) -> tasks.Task:
    return tasks.Task("S-NIAH", tmp_path / "niah.txt", "What is the secret code?", "123456", [])


def test_an_eval_row_has_one_cell_per_column(tmp_path: Path) -> None:
    result = {
        "bytes": 2_500_000, "method": "rlm depth 1", "correct": False, "stopped": "iterations",
        "root": (12_345, 678), "sub": (1_000_000, 2_000), "cost_usd": 0.01234, "elapsed_s": 12.34,
    }  # fmt: skip
    row = table_row(task(tmp_path), result)
    assert len(row) == len(COLUMNS)
    assert row == (
        "S-NIAH (2.5 MB)", "rlm depth 1", "no (iterations)", "12,345 / 678", "1,000,000 / 2,000", "$0.0123", "12.3",
    )  # fmt: skip
    assert table_row(task(tmp_path), dict(result, correct=True, cost_usd=None))[2::3] == ("yes", "unknown")


def test_a_skipped_method_says_why_and_leaves_the_rest_empty(tmp_path: Path) -> None:
    row = table_row(task(tmp_path), {"bytes": 4e6, "method": "plain", "skipped": "does not fit the window"})
    assert row == ("S-NIAH (4.0 MB)", "plain", "does not fit the window", "", "", "", "")
