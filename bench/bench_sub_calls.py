"""Measure sub-calls end to end: REPL code -> worker pipe -> router -> Anthropic SDK -> provider on loopback.

Why: an RLM's wall time is dominated by its sub-calls, so a batch must finish in about the time of its
slowest wave (concurrency, not a loop), and the server's own cost per call must be small next to a model's
latency. The provider is the test suite's fake Anthropic API (real wire format, fixed latency) in a thread;
the server is launched as a host launches it, over stdio. Baselines are measured in the same run.

Run: python bench/bench_sub_calls.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anthropic
import anyio
from mcp import Client, StdioServerParameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report
from tests.fakes import FakeProvider  # a test fixture, reused as the benchmark's provider

KEY = "bench-key"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def server_params(base_url: str, workdir: Path, concurrency: int) -> StdioServerParameters:
    search = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")]))
    command = shutil.which("rlm-mcp", path=search) or sys.executable
    args = [] if command != sys.executable else ["-m", "rlm_mcp"]
    args += ["--root", str(workdir), "--workspace", str(workdir / "ws"), "--max-concurrency", str(concurrency)]
    args += ["--max-sub-calls", "100000", "--timeout-s", "300"]
    env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": base_url}
    return StdioServerParameters(command=command, args=args, env=env)


async def timed_cell(client: Client, code: str) -> float:
    started = time.perf_counter()
    result = await client.call_tool("run_code", {"code": code})
    elapsed = time.perf_counter() - started
    data = result.structured_content or {}
    if data.get("outcome") != "ok":
        raise RuntimeError(f"cell failed: {result.content[0].text}")  # type: ignore[union-attr]
    return elapsed


async def sdk_sequential(base_url: str, calls: int) -> float:
    """Baseline: the same SDK call made directly, no MCP, no worker, no router."""
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=base_url, max_retries=0)
    try:
        started = time.perf_counter()
        for i in range(calls):
            await client.messages.create(
                model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": f"direct {i}"}]
            )
        return (time.perf_counter() - started) / calls
    finally:
        await client.close()


async def main(quick: bool) -> None:
    batch, latency, concurrency = 256, 0.2, 32
    repeats = 1 if quick else 3
    sequential_calls = 30 if quick else 100
    rows: list[tuple[str, str, str, str, str]] = []
    provider = FakeProvider.start_in_thread(answer=lambda prompt, system, model: "ok")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            params = server_params(provider.base_url, Path(tmp), concurrency)
            async with Client(params) as client:
                await timed_cell(client, "llm_query('warm up')")

                provider.latency = latency
                walls = []
                for repeat in range(repeats):
                    code = f"r = llm_query_batched([f'b{repeat}-{{i}}' for i in range({batch})])\nassert all(r)"
                    walls.append(await timed_cell(client, code))
                    log(f"batch {repeat + 1}/{repeats}: {walls[-1]:.3f} s, peak in flight {provider.max_in_flight}")
                ideal = (batch / concurrency) * latency
                wall = statistics.median(walls)
                rows.append(
                    (
                        f"llm_query_batched of {batch} at concurrency {concurrency}, {latency * 1000:.0f} ms latency",
                        f"{wall:.3f} s",
                        "ratio <= 1.15",
                        f"{ideal:.3f} s ideal ({batch // concurrency} waves)",
                        f"{wall / ideal:.3f}",
                    )
                )
                rows.append(
                    ("peak requests in flight at the provider", str(provider.max_in_flight), str(concurrency), "", "")
                )

                provider.latency = 0.0
                zero = await timed_cell(client, f"r = llm_query_batched([f'z{{i}}' for i in range({batch})])")
                rows.append((f"batch of {batch}, zero latency, per call", f"{zero / batch * 1000:.2f} ms", "", "", ""))
                started = time.perf_counter()
                await timed_cell(client, f"for i in range({sequential_calls}): llm_query(f's{{i}}')")
                per_call = (time.perf_counter() - started) / sequential_calls
        direct = await sdk_sequential(provider.base_url, sequential_calls)
        rows.append(
            (
                "sequential llm_query, zero latency, per call",
                f"{per_call * 1000:.2f} ms",
                "",
                f"{direct * 1000:.2f} ms direct SDK call",
                f"{per_call / direct:.2f}x",
            )
        )
    finally:
        provider.stop()

    print_report("sub-call benchmark", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat and fewer sequential calls")
    anyio.run(main, parser.parse_args().quick)
