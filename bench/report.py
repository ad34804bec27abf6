"""The benchmarks' report format, which `rlm-mcp eval` shares: see rlm_mcp/evaluation/report.py."""

from rlm_mcp.evaluation.report import COLUMNS, print_report

__all__ = ["COLUMNS", "print_report"]
