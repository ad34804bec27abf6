"""The trace viewer at 1k, 10k and 100k sub-calls: building the page, opening it, and working in it.

Why: a trace worth looking at is a big one, and a page that takes a minute to open or freezes on a click
is not looked at. Each size is a synthetic trace of the tracer's schema (testkit/traces.py: one cell fans
its sub-calls out 16 at a time, plus a child RLM and a failing cell). The page is opened in a real
headless Chromium (testkit/browser.py); the baseline, in the same run and the same browser, is a page
with the same embedded data whose script only parses it: what any page that carries the data must pay.
Interactions are timed inside the page (performance.now around the handler, with the layout it forces):
opening the cell of all the sub-calls, selecting it (its timeline drawn), searching every text for a
string one answer holds, and jumping to the next error. Page size is against the trace's size.

Run: python bench/bench_viewer.py [--quick]   (--quick: 1k and 10k only)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report
from rlm_mcp.viewer import write_html
from rlm_mcp.viewer.page import asset
from testkit.browser import Browser, chromium_path
from testkit.traces import write_synthetic

PARSE_ONLY = "JSON.parse(document.getElementById('trace-data').textContent); document.body.dataset.ready = 'yes';"
PARSE_ONLY += "document.body.dataset.drawnMs = Math.round(performance.now());"


def timed(browser: Browser, action: str) -> float:
    """Milliseconds the page spends on `action` (a synchronous handler) and the layout it forces."""
    script = f"const t = performance.now(); {action}; document.body.offsetHeight; return performance.now() - t;"
    return browser.evaluate(f"(() => {{ {script} }})()")


def opened_ms(browser: Browser, page: Path) -> float:
    browser.open(page.as_uri())
    return float(browser.evaluate("document.body.dataset.drawnMs"))


def measure(browser: Browser, directory: Path, sub_calls: int) -> list[list[str]]:
    label = f"{sub_calls // 1000}k sub-calls"
    (directory / f"t{sub_calls}").mkdir()
    synthetic = write_synthetic(directory / f"t{sub_calls}" / "trace.jsonl", sub_calls)
    page, bare = directory / f"page{sub_calls}.html", directory / f"bare{sub_calls}.html"
    started = time.perf_counter()
    write_html(synthetic.path, page)
    built = time.perf_counter() - started
    bare.write_text(page.read_text(encoding="utf-8").replace(asset("page.js"), PARSE_ONLY), encoding="utf-8")
    baseline = min(opened_ms(browser, bare) for _ in range(2))
    shown = min(opened_ms(browser, page) for _ in range(2))
    rows = [
        [
            f"{label}: page size (MB)",
            f"{page.stat().st_size / 1e6:.1f}",
            "",
            f"trace {synthetic.path.stat().st_size / 1e6:.1f}",
            f"{page.stat().st_size / synthetic.path.stat().st_size:.2f}x",
        ],
        [f"{label}: rlm-mcp trace builds the page (s)", f"{built:.2f}", "", "", ""],
        [
            f"{label}: open to drawn (ms)",
            f"{shown:.0f}",
            "<= 3000",
            f"parse only {baseline:.0f}",
            f"{shown / baseline:.2f}x",
        ],
    ]
    cell = f'.row[data-id="{synthetic.fan_cell}"]'
    expand = timed(browser, f"document.querySelector('{cell} .twisty').click()")
    rows_in_dom = browser.evaluate("document.querySelectorAll('.row').length")
    select = timed(browser, f"document.querySelector('{cell} .kind').click()")
    search = timed(
        browser,
        "const q = document.getElementById('q'); q.value = 'NEEDLE-4242';"
        "q.dispatchEvent(new KeyboardEvent('keydown', {key: 'Enter'}))",
    )
    assert browser.evaluate("location.hash") == f"#select={synthetic.needle_sub_call}", "the search did not find it"
    again = timed(browser, "document.getElementById('next').click()")
    error = timed(browser, "document.getElementById('next-error').click()")
    rows += [
        [
            f"{label}: open the cell of all sub-calls (ms)",
            f"{expand:.0f}",
            "<= 200",
            "",
            f"{rows_in_dom} rows in the DOM",
        ],
        [f"{label}: select it, timeline drawn (ms)", f"{select:.0f}", "<= 500", "", ""],
        [f"{label}: first search of every text (ms)", f"{search:.0f}", "<= 1000", "", ""],
        [
            f"{label}: the next match, index built (ms)",
            f"{again:.0f}",
            "<= 100",
            f"first {search:.0f}",
            f"{again / max(search, 0.01):.2f}x",
        ],
        [f"{label}: next error (ms)", f"{error:.0f}", "<= 200", "", ""],
    ]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k and 10k sub-calls only")
    args = parser.parse_args()
    if chromium_path() is None:
        print("bench_viewer: Chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    sizes = (1_000, 10_000) if args.quick else (1_000, 10_000, 100_000)
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as scratch, Browser() as browser:
        for size in sizes:
            rows += measure(browser, Path(scratch), size)
    print_report("trace viewer", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
