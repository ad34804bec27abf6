"""Replay: how long `rlm-mcp replay` takes to re-run a session, against the session it replays.

Why: a replay is a regression test, run after every change to the data or the code, so it must cost far
less than the session did. The session is recorded in this run against the fake provider of the test
suite at a model-like latency per sub-call (testkit/fakes.py: real HTTP on 127.0.0.1, the anthropic SDK),
through the real MCP client: a 2 MB log loaded, split into pieces, one batch of sub-calls over them, a
summary from their answers, then a second pass; that session's wall time is the baseline. The replay is the
same path a user's `rlm-mcp replay TRACE` takes (a fresh server whose one backend is the trace, a new
worker, the same cells), with no provider running; it starts its own server and worker, which the
recorded session had already paid for before its first cell, so those are measured apart.

Run: python bench/bench_replay.py [--quick]   (--quick: one latency, fewer sub-calls)
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import anyio
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report
from rlm_mcp.config import load_settings
from rlm_mcp.replay.record import load as load_recording
from rlm_mcp.replay.run import replay
from rlm_mcp.surface.server import build_server
from testkit.fakes import FakeProvider

CELLS = (
    "pieces = chunk(log, {size})\nprint(len(pieces), 'pieces')",
    "counts = llm_query_batched([f'How many ERROR lines? {{p[:200]}}' for p in pieces], confirm=True)\n"
    "print(counts[:3])",
    "summary = llm_query('Sum these: ' + ', '.join(counts))\nprint(summary)",
    "again = llm_query_batched([f'Name the first service in {{p[:100]}}' for p in pieces], confirm=True)\n"
    "print(len(again))",
)


def write_log(path: Path, megabytes: int) -> None:
    chooser = random.Random(7)
    services = ["auth", "billing", "search", "mail"]
    lines = []
    size = 0
    while size < megabytes * 1_000_000:
        line = f"2026-12-03T10:{chooser.randrange(60):02d} {chooser.choice(['INFO', 'ERROR'])} "
        line += f"{chooser.choice(services)} request {chooser.randrange(10**6)}\n"
        lines.append(line)
        size += len(line)
    path.write_text("".join(lines))


def answer(prompt: str, system: str | None, model: str) -> str:
    return str(len(prompt) % 17)


async def record(directory: Path, latency: float, pieces: int) -> tuple[Path, float]:
    settings = load_settings(
        {
            "roots": [directory],
            "workspace": directory / "ws",
            "structured_content": True,
            "timeout_s": 600,
            "memory": "off",
            "distill": "off",
        },  # the session's cells only: no distillation at its close
        environ={},
    )
    size = (directory / "app.log").stat().st_size // pieces + 1
    async with FakeProvider.running(answer=answer, latency=latency) as fake:
        os.environ.update(ANTHROPIC_API_KEY="sk-bench", ANTHROPIC_BASE_URL=fake.base_url)
        try:
            async with Client(build_server(settings)) as client:
                started = time.perf_counter()
                await client.call_tool("load_context", {"path": str(directory / "app.log"), "name": "log"})
                for cell in CELLS:
                    result = await client.call_tool("run_code", {"code": cell.format(size=size)})
                    assert result.structured_content["outcome"] == "ok", result
                elapsed = time.perf_counter() - started
        finally:
            for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
                os.environ.pop(name, None)
    (trace,) = (directory / "ws" / "sessions").glob("*/trace.jsonl")
    return trace, elapsed


async def replayed(directory: Path, trace: Path) -> tuple[float, int]:
    recording = load_recording(trace)
    settings = load_settings(
        {
            "roots": [directory],
            "workspace": directory / "replay-ws",
            "structured_content": True,
            "memory": "off",
            "distill": "off",
            "timeout_s": 600,
        },
        environ={},
    ).model_copy(update={"sub_model": None})
    started = time.perf_counter()
    report = await replay(recording, settings)
    elapsed = time.perf_counter() - started
    assert report.exit_code == 0, [step.as_json() for step in report.steps if step.status != "same"]
    return elapsed, len(report.steps)


async def empty_server(directory: Path) -> float:
    """A fresh server and its worker's first cell: what a replay pays before it replays anything."""
    settings = load_settings(
        {"roots": [directory], "workspace": directory / "empty-ws", "structured_content": True}, environ={}
    )
    started = time.perf_counter()
    async with Client(build_server(settings)) as client:
        await client.call_tool("run_code", {"code": "1"})
    return time.perf_counter() - started


async def main_async(quick: bool) -> list[list[str]]:
    rows: list[list[str]] = []
    cases = [(0.5, 40)] if quick else [(0.5, 40), (2.0, 200)]
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        write_log(directory / "app.log", 2)
        start_up = await empty_server(directory)
        for latency, pieces in cases:
            case = directory / f"case-{pieces}"
            case.mkdir()
            (case / "app.log").write_bytes((directory / "app.log").read_bytes())
            trace, original = await record(case, latency, pieces)
            again, steps = await replayed(case, trace)
            label = f"{2 * pieces + 1} sub-calls at {latency:g} s each"
            rows.append([f"{label}: the session", f"{original:.2f} s", "", "baseline", "1.00x"])
            rows.append([f"{label}: rlm-mcp replay ({steps} steps)", f"{again:.2f} s", "", f"{original:.2f} s",
                         f"{again / original:.2f}x"])  # fmt: skip
        rows.append(["a fresh server and worker to its first cell (in every replay)", f"{start_up:.2f} s", "", "", ""])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    rows = anyio.run(main_async, args.quick)
    print_report("replay", rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
