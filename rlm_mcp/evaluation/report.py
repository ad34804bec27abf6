"""The one report format of every benchmark: a provenance line, then a Markdown table.

Shared by bench/ and `rlm-mcp eval`, so that docs/benchmarks.md can paste any output as it is, and every
table says when, where and by which exact command it was made.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from collections.abc import Sequence

COLUMNS = ("measurement", "value", "target", "baseline", "ratio")


def print_report(title: str, rows: Sequence[Sequence[str]], columns: Sequence[str] = COLUMNS) -> None:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(
        f"rlm-mcp {title}, {now}; {platform.platform()}; {os.cpu_count()} CPUs; "
        f"Python {platform.python_version()}; `{shlex.join([sys.executable, *sys.argv])}`\n"
    )
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for cells in rows:
        print("| " + " | ".join(cell or "—" for cell in cells) + " |")
