"""Measure rlm-mcp the way an MCP host sees it: a child process spoken to over stdio.

Why: the server's promises (instant start, negligible per-call overhead, fast loading of huge files, a small
tools/list that costs the model little context on every turn) are only meaningful end to end, through the real
process launch, the JSON-RPC framing and the REPL worker. Each number is printed next to a baseline taken in the
same run on the same machine, so a regression shows as a ratio rather than as an absolute that depends on the
hardware. Nothing here asserts: it measures and prints Markdown to stdout (progress goes to stderr).

Run: python bench/bench_core.py [--quick] [--against REV]

With --against REV, the same cold start and run_code round trip are also measured on the tree at git revision
REV (checked out in a temporary worktree, launched with `python -m rlm_mcp` from there), interleaved with this
tree's in the same run, so a restructuring shows as a ratio against the code it replaced.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report
from bench.workers import worker_host

MB = 1_000_000
Row = tuple[str, str, str, str, str]


def log(message: str) -> None:
    """Progress goes to stderr so that stdout stays a clean Markdown report."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def p95(samples: list[float]) -> float:
    """95th percentile, inclusive method, so that it never exceeds the largest sample."""
    return statistics.quantiles(samples, n=100, method="inclusive")[94] if len(samples) > 1 else samples[0]


def write_log_file(path: Path, size: int) -> None:
    """Log-like ASCII text from a fixed seed: realistic line lengths and vocabulary, identical on every run."""
    rng = random.Random(20240601)
    levels, words = ["INFO", "DEBUG", "WARN", "ERROR"], ["request", "user", "cache", "miss", "db", "retry", "ok", "id"]
    written = 0
    with open(path, "w", encoding="ascii") as handle:
        while written < size:
            line = (
                f"2024-06-01T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
                f"{rng.randrange(1000):03d}Z {rng.choice(levels)} svc-{rng.randrange(40)} "
                f"{' '.join(rng.choices(words, k=rng.randrange(3, 12)))} latency_ms={rng.randrange(5000)}\n"
            )
            handle.write(line)
            written += len(line)


def server_params(data_dir: Path, workspace: Path) -> StdioServerParameters:
    """Launch the `rlm-mcp` entry point as a host would, falling back to `python -m rlm_mcp`.

    The interpreter's own bin directory is searched first, so an unactivated venv still runs its own script.
    """
    env = {**os.environ, "RLM_MCP_ROOTS": str(data_dir), "RLM_MCP_WORKSPACE": str(workspace)}
    search = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")]))
    command = shutil.which("rlm-mcp", path=search)
    if command is not None:
        return StdioServerParameters(command=command, args=[], env=env)
    return StdioServerParameters(command=sys.executable, args=["-m", "rlm_mcp"], env=env)


async def timed_calls(call: Callable[[int], Awaitable[None]], warmup: int, count: int) -> list[float]:
    """Per-call wall times in seconds, after `warmup` untimed calls (imports, caches, first worker spawn)."""
    for i in range(warmup):
        await call(i)
    samples = []
    for i in range(count):
        started = time.perf_counter()
        await call(warmup + i)
        samples.append(time.perf_counter() - started)
    return samples


def check(result: CallToolResult, what: str) -> None:
    """A failed tool call would make every timing meaningless, so stop at once and say what the server said."""
    if result.is_error:
        raise RuntimeError(f"{what} failed: {result.content}")


async def bench_cold_start(params: StdioServerParameters, repeats: int) -> tuple[list[float], list[float]]:
    """Launch-to-answered-tools/list, plus the first run_code, which is when the REPL worker is spawned."""
    starts, first_runs = [], []
    for i in range(repeats):
        started = time.perf_counter()
        async with Client(params) as client:
            await client.list_tools()
            starts.append(time.perf_counter() - started)
            started = time.perf_counter()
            check(await client.call_tool("run_code", {"code": "1"}), "first run_code")
            first_runs.append(time.perf_counter() - started)
        log(f"cold start {i + 1}/{repeats}: {starts[-1] * 1000:.0f} ms, first run_code {first_runs[-1] * 1000:.0f} ms")
    return starts, first_runs


async def bench_raw_worker(tmp: Path, count: int) -> list[float]:
    """The same exec request sent straight to a WorkerHost: what run_code costs without MCP, JSON-RPC and stdio."""
    host = worker_host(tmp)
    await host.start()

    async def call(i: int) -> None:
        outcome = await host.call(
            {"op": "exec", "code": "1", "cell": i + 1, "output_limit": 8_000}, timeout=10, grace=1
        )
        if outcome.fate != "ok" or not (outcome.reply or {}).get("ok"):
            raise RuntimeError(f"raw worker call failed: {outcome}")

    try:
        return await timed_calls(call, 20, count)
    finally:
        await host.close()


def tree_params(root: Path, data_dir: Path, workspace: Path) -> StdioServerParameters:
    """The server of the checkout at `root`, launched as `python -m rlm_mcp` with that tree first on the path."""
    env = {**os.environ, "RLM_MCP_ROOTS": str(data_dir), "RLM_MCP_WORKSPACE": str(workspace), "PYTHONPATH": str(root)}
    return StdioServerParameters(command=sys.executable, args=["-m", "rlm_mcp"], env=env, cwd=str(root))


async def compare_trees(revision: str, tmp: Path, data_dir: Path, repeats: int, calls: int) -> list[Row]:
    """This tree against the one at `revision`: cold start, first run_code and the round trip, interleaved."""
    here = Path(__file__).resolve().parents[1]
    other = tmp / "other-tree"
    subprocess.run(["git", "-C", str(here), "worktree", "add", "--detach", str(other), revision],
                   check=True, capture_output=True)  # fmt: skip
    try:
        trees = {"this tree": here, revision: other}
        params = {name: tree_params(root, data_dir, tmp / f"ws-{index}") for index, (name, root) in
                  enumerate(trees.items())}  # fmt: skip
        starts: dict[str, list[float]] = {name: [] for name in trees}
        firsts: dict[str, list[float]] = {name: [] for name in trees}
        trips: dict[str, list[float]] = {name: [] for name in trees}
        for index in range(repeats):
            for name in trees if index % 2 == 0 else reversed(list(trees)):
                one_start, one_first = await bench_cold_start(params[name], 1)
                starts[name] += one_start
                firsts[name] += one_first
        for _ in range(4):  # blocks of calls, alternating trees, so drift in the machine's load hits both
            for name in trees:
                async with Client(params[name]) as client:

                    async def run_one(_: int) -> None:
                        check(await client.call_tool("run_code", {"code": "1"}), "run_code")

                    trips[name] += await timed_calls(run_one, 10, calls // 4)
    finally:
        subprocess.run(["git", "-C", str(here), "worktree", "remove", "--force", str(other)], capture_output=True)
    rows: list[Row] = []
    for label, samples, scale, unit in (
        (f"cold start to tools/list, median (n={repeats})", starts, 1, "s"),
        ("first run_code, median", firsts, 1, "s"),
        (f"run_code round trip over stdio, p50 (n={calls})", trips, 1000, "ms"),
    ):
        ours, theirs = (statistics.median(samples[name]) * scale for name in trees)
        digits = 3 if unit == "s" else 2
        rows.append((f"{label}: this tree against {revision}", f"{ours:.{digits}f} {unit}", "",
                     f"{theirs:.{digits}f} {unit} at {revision}", f"{ours / theirs:.2f}x"))  # fmt: skip
    return rows


async def main(quick: bool, against: str | None = None) -> None:
    cold_repeats, calls, size_mb = (2, 50, 20) if quick else (5, 300, 100)
    rows: list[Row] = []

    def row(measurement: str, value: str, target: str = "", baseline: str = "", ratio: str = "") -> None:
        rows.append((measurement, value, target, baseline, ratio))

    with tempfile.TemporaryDirectory(prefix="rlm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir, workspace = tmp / "data", tmp / "workspace"
        data_dir.mkdir()
        big = data_dir / "big.txt"
        log(f"writing {size_mb} MB of log-like text to {big}")
        write_log_file(big, size_mb * MB)
        file_mb = big.stat().st_size / MB
        params = server_params(data_dir, workspace)
        log(f"server command: {shlex.join([params.command, *params.args])}")

        starts, first_runs = await bench_cold_start(params, cold_repeats)
        row(f"cold start to tools/list, median (n={cold_repeats})", f"{statistics.median(starts):.3f} s", "<= 1 s")
        row("cold start to tools/list, max", f"{max(starts):.3f} s", "<= 1 s")
        row("first run_code (spawns the REPL worker), median", f"{statistics.median(first_runs):.3f} s")

        log(f"raw worker baseline: {calls} exec calls")
        raw = await bench_raw_worker(tmp / "raw", calls)

        async with Client(params) as client:
            tools = await client.list_tools()

            async def run_one(_: int) -> None:
                check(await client.call_tool("run_code", {"code": "1"}), "run_code")

            log(f"run_code over stdio: {calls} calls")
            stdio = await timed_calls(run_one, 20, calls)
            for label, stat, target in (("p50", statistics.median, "<= 5 ms"), ("p95", p95, "")):
                ours, base = stat(stdio) * 1000, stat(raw) * 1000
                row(
                    f"run_code round trip over stdio, {label} (n={calls})",
                    f"{ours:.2f} ms",
                    target,
                    f"{base:.2f} ms raw worker",
                    f"{ours / base:.1f}x",
                )

            loads, reads = [], []
            for i in range(3):
                started = time.perf_counter()
                check(await client.call_tool("load_context", {"path": "big.txt", "name": "context"}), "load_context")
                loads.append(time.perf_counter() - started)
                log(f"load_context {i + 1}/3: {loads[-1]:.3f} s")
        for _ in range(3):
            started = time.perf_counter()
            with open(big, encoding="utf-8") as handle:
                handle.read()
            reads.append(time.perf_counter() - started)
        load_s, read_s = statistics.median(loads), statistics.median(reads)
        row(
            f"load_context of {file_mb:.0f} MB file, median (n=3)",
            f"{load_s:.3f} s",
            "",
            f"{read_s:.3f} s open().read()",
            f"{load_s / read_s:.1f}x",
        )
        row("load_context, first call (fresh worker memory)", f"{loads[0]:.3f} s", "", "", f"{loads[0] / read_s:.1f}x")
        row(
            "load_context throughput (median)",
            f"{file_mb / load_s:.0f} MB/s",
            "",
            f"{file_mb / read_s:.0f} MB/s",
            f"{read_s / load_s:.2f}x",
        )

        if against:
            log(f"this tree against {against}, interleaved")
            rows += await compare_trees(against, tmp, data_dir, cold_repeats * 2, calls)

    dumped = [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in tools.tools]
    for tool in dumped:
        row(f"tools/list JSON: {tool['name']}", f"{len(json.dumps(tool)):,} chars")
    row("tools/list JSON: total", f"{len(json.dumps(dumped)):,} chars", "<= 4,000")

    print_report("core benchmark", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and a 20 MB file instead of 100 MB")
    parser.add_argument("--against", metavar="REV", help="also measure the tree at this git revision, interleaved")
    arguments = parser.parse_args()
    anyio.run(main, arguments.quick, arguments.against)
