"""Measure a map on a Ray cluster: rlm_map and llm_map over a corpus on an HTTP server, against one process.

Why: a map is worth sending to a cluster when the work per object outweighs shipping code and results,
and the cluster's overhead (a task per object, retries, gathering) must stay small next to it. Measured
here on a local Ray head (loopback, 2 CPUs: the same code path as a real cluster, without its scale): a
corpus of log files on a local HTTP server; the baseline is the same function run in one process over the
same URLs (fetched with fsspec one after another, no child process per object), in the same run; each
cluster task runs the function in a child process of its own, without credentials, which it pays for.
llm_map is timed against the fake provider of the test suite, whose sub-calls go through the session's
router like any others.

Run: python bench/bench_cluster.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report
from rlm_mcp.cluster import pieces
from rlm_mcp.config import load_settings
from rlm_mcp.surface.server import build_server
from testkit.fakes import FakeProvider
from testkit.ray_head import ENVIRONMENT, ray_head
from testkit.static_http import serving

FUNCTION = """\
def error_kinds(text, path):
    import collections, re
    return dict(collections.Counter(re.findall(r"^ERROR (\\\\w+)", text, re.M)).most_common(3))
"""


def write_corpus(directory: Path, files: int, size: int, prefix: str = "app") -> None:
    rng = random.Random(files)
    kinds = ["disk", "timeout", "auth", "oom"]
    for index in range(files):
        lines = []
        written = 0
        while written < size:
            line = f"2026-12-03T10:{rng.randrange(60):02d}:00Z " + (
                f"ERROR {rng.choice(kinds)} on shard {rng.randrange(64)}\n" if rng.random() < 0.05
                else f"INFO request {rng.randrange(10**6)} served in {rng.randrange(900)} ms\n"
            )  # fmt: skip
            lines.append(line)
            written += len(line)
        (directory / f"{prefix}-{index:03d}.log").write_text("".join(lines))


def one_process(urls: list[str]) -> float:
    """The same function in this process over the same URLs, one after another: what a user without a
    cluster would run (no child process per object, which the cluster's tasks pay for isolation)."""
    namespace: dict[str, Any] = {}
    exec(FUNCTION, namespace)
    started = time.perf_counter()
    for url in urls:
        namespace["error_kinds"](pieces.read_text(url, 1 << 40), url)
    return time.perf_counter() - started


async def timed(client: Client, code: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = await client.call_tool("run_code", {"code": code, "timeout_s": 600})
    elapsed = time.perf_counter() - started
    data = result.structured_content or {}
    if data.get("outcome") != "ok":
        raise RuntimeError(result.content[0].text)  # type: ignore[union-attr]
    return elapsed, data


async def main(quick: bool) -> None:
    files, size = (16, 1_000_000) if quick else (48, 4_000_000)
    os.environ.update(ENVIRONMENT)
    with contextlib.ExitStack() as stack:
        name = stack.enter_context(tempfile.TemporaryDirectory())
        address = stack.enter_context(ray_head())
        directory = Path(name)
        corpus = directory / "corpus"
        corpus.mkdir()
        write_corpus(corpus, files, size)
        write_corpus(corpus, 8, 20_000, prefix="brief")  # what one sub-call can read whole
        base = stack.enter_context(serving(corpus))
        urls = [f"{base}app-{index:03d}.log" for index in range(files)]
        baseline = one_process(urls)
        async with FakeProvider.running(answer=lambda prompt, system, model: "fine") as fake:
            os.environ.update(ANTHROPIC_API_KEY="bench-key", ANTHROPIC_BASE_URL=fake.base_url)
            settings = load_settings(
                {"roots": [name], "workspace": directory / "ws", "structured_content": True, "timeout_s": 600,
                 "max_timeout_s": 600, "allow_url": [base], "ray_address": address, "distill": "off"},
                environ={},
            )  # fmt: skip
            async with Client(build_server(settings)) as client:
                first, _ = await timed(client, FUNCTION + f"r = rlm_map(error_kinds, {base + '*.log'!r})\nlen(r)")
                again, _ = await timed(client, f"r = rlm_map(error_kinds, {base + '*.log'!r})\nlen(r)")
                template = "Which errors stand out in {path}? " + "{text}"
                brief = f"{base}brief-*.log"
                asked, data = await timed(client, f"a = llm_map({template!r}, {brief!r}, confirm=True)\nlen(a)")
    megabytes = files * size / 1e6
    rows = [
        (f"the map in one process, {files} files, {megabytes:,.0f} MB over HTTP", f"{baseline:.2f} s", "", "baseline",
         "1.0x"),
        ("rlm_map on the Ray cluster, first (joins the cluster, ships the code)", f"{first:.2f} s", "",
         f"{baseline:.2f} s", f"{first / baseline:.2f}x"),
        ("rlm_map on the Ray cluster, again", f"{again:.2f} s", "", f"{baseline:.2f} s", f"{again / baseline:.2f}x"),
        (f"llm_map over 8 files of 20 KB ({data['sub_calls']['calls']} sub-calls through the session's budget)",
         f"{asked:.2f} s", "", "", ""),
    ]  # fmt: skip
    print_report(f"Ray map (local head on 127.0.0.1, 2 CPUs; {files} files of {size / 1e6:g} MB)", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    anyio.run(main, parser.parse_args().quick)
