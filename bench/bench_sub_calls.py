"""Measure sub-calls end to end: REPL code -> worker pipe -> router -> Anthropic SDK -> provider on loopback.

Why: an RLM's wall time is dominated by its sub-calls, so a batch must finish in about the time of its
slowest wave (concurrency, not a loop), and the server's own cost per call must be small next to a model's
latency. The provider is the test suite's fake Anthropic API (real wire format, fixed latency) in a process
of its own (bench/provider_process.py); the server is launched as a host launches it, over stdio. Baselines
(the same calls made straight through the SDK, no MCP, worker or router) are measured in the same run.

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
from bench.provider_process import ProviderProcess
from bench.report import print_report

KEY = "bench-key"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def server_params(base_url: str, workdir: Path, concurrency: int) -> StdioServerParameters:
    search = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), os.environ.get("PATH")]))
    command = shutil.which("rlm-mcp", path=search) or sys.executable
    args = [] if command != sys.executable else ["-m", "rlm_mcp"]
    args += ["--root", str(workdir), "--workspace", str(workdir / "ws"), "--max-concurrency", str(concurrency)]
    args += ["--max-sub-calls", "100000", "--timeout-s", "300", "--structured-content", "--confirm-batch-usd", "1e6"]
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


def direct_client(base_url: str) -> anthropic.AsyncAnthropic:
    """Baseline client: the SDK as its users get it (default HTTP client), with no MCP, worker or router."""
    return anthropic.AsyncAnthropic(api_key=KEY, base_url=base_url, max_retries=0)


async def direct_call(client: anthropic.AsyncAnthropic, prompt: str) -> None:
    await client.messages.create(
        model="claude-haiku-4-5", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    )


async def sdk_sequential(base_url: str, calls: int) -> float:
    """Seconds per call, one after another."""
    client = direct_client(base_url)
    try:
        await direct_call(client, "warm up")
        started = time.perf_counter()
        for i in range(calls):
            await direct_call(client, f"direct {i}")
        return (time.perf_counter() - started) / calls
    finally:
        await client.close()


async def sdk_batch(base_url: str, batch: int, concurrency: int, tag: str) -> float:
    """Wall seconds for `batch` calls at most `concurrency` at a time: what the SDK alone achieves."""
    client = direct_client(base_url)
    limiter = anyio.CapacityLimiter(concurrency)

    async def one(index: int) -> None:
        async with limiter:
            await direct_call(client, f"{tag}-{index}")

    async def run_all(count: int) -> float:
        started = time.perf_counter()
        async with anyio.create_task_group() as group:
            for index in range(count):
                group.start_soon(one, index)
        return time.perf_counter() - started

    try:
        await run_all(concurrency)  # open the connections, as the server's warm-up does
        return await run_all(batch)
    finally:
        await client.close()


FIRST_BATCH = 128
HOST_FIRST_TURN_S = 3.0  # from the server's start to the first batch: a root model's first turns take longer


async def main(quick: bool) -> None:
    batch, latency, concurrency = 256, 0.2, 32
    repeats = 1 if quick else 3
    sequential_calls = 30 if quick else 100
    ideal = (batch / concurrency) * latency
    rows: list[tuple[str, str, str, str, str]] = []
    with ProviderProcess() as provider, tempfile.TemporaryDirectory() as tmp:
        provider.set_latency(latency)
        params = server_params(provider.base_url, Path(tmp), concurrency)
        ours: list[float] = []
        direct: list[float] = []
        first_code = f"llm_query_batched([f'first {{i}} {{n}}' for i in range({FIRST_BATCH})])"
        firsts: list[float] = []
        seconds: list[float] = []
        for repeat in range(repeats):
            async with Client(params) as client:
                # The first batch the way a host sends it: the host starts the server, and its model takes a
                # turn or two (reading the tools, loading a context) before the first batch. The server
                # prepares the worker and the backend meanwhile.
                await anyio.sleep(HOST_FIRST_TURN_S)
                firsts.append(await timed_cell(client, f"n = {repeat}\n" + first_code))
                seconds.append(await timed_cell(client, f"n = {repeat}.5\n" + first_code))
            log(f"fresh server {repeat + 1}/{repeats}: first batch {firsts[-1]:.3f} s, second {seconds[-1]:.3f} s")
        async with Client(params) as client:
            # The worst case: a batch the moment the server has started, before anything could be prepared.
            cold = await timed_cell(client, "n = 'cold'\n" + first_code)
        async with Client(params) as client:
            # Opens the server's connections, so no wave below pays for TCP set-up.
            await timed_cell(client, f"llm_query_batched([f'warm {{i}}' for i in range({concurrency})])")
            provider.reset()
            for repeat in range(repeats):
                code = f"r = llm_query_batched([f'b{repeat}-{{i}}' for i in range({batch})])\nassert all(r)"
                ours.append(await timed_cell(client, code))
                direct.append(await sdk_batch(provider.base_url, batch, concurrency, f"d{repeat}"))
                log(f"batch {repeat + 1}/{repeats}: {ours[-1]:.3f} s ours, {direct[-1]:.3f} s direct SDK")
            peak = provider.stats()["max_in_flight"]

            provider.set_latency(0.0)
            zero = await timed_cell(client, f"r = llm_query_batched([f'z{{i}}' for i in range({batch})])")
            started = time.perf_counter()
            await timed_cell(client, f"for i in range({sequential_calls}): llm_query(f's{{i}}')")
            per_call = (time.perf_counter() - started) / sequential_calls
        direct_per_call = await sdk_sequential(provider.base_url, sequential_calls)

    wall, direct_wall = statistics.median(ours), statistics.median(direct)
    label = f"llm_query_batched of {batch} at concurrency {concurrency}, {latency * 1000:.0f} ms latency"
    waves = f"{ideal:.3f} s ideal ({batch // concurrency} waves)"
    first_ideal = (FIRST_BATCH / concurrency) * latency
    first, second = statistics.median(firsts), statistics.median(seconds)
    rows += [
        (
            f"first llm_query_batched of {FIRST_BATCH} of a server, {HOST_FIRST_TURN_S:g} s after its start, "
            f"{latency * 1000:.0f} ms latency",
            f"{first:.3f} s",
            "ratio <= 1.3",
            f"{first_ideal:.3f} s ideal ({FIRST_BATCH // concurrency} waves)",
            f"{first / first_ideal:.3f}",
        ),
        (
            "its second batch of the same size",
            f"{second:.3f} s",
            "",
            f"{first_ideal:.3f} s ideal",
            f"{second / first_ideal:.3f}",
        ),
        ("first batch vs second", "", "", f"{second:.3f} s", f"{first / second:.3f}"),
        (
            "first batch the moment the server has started",
            f"{cold:.3f} s",
            "",
            f"{first_ideal:.3f} s ideal",
            f"{cold / first_ideal:.3f}",
        ),
        (label, f"{wall:.3f} s", "ratio <= 1.15", waves, f"{wall / ideal:.3f}"),
        ("the same batch straight through the SDK", f"{direct_wall:.3f} s", "", waves, f"{direct_wall / ideal:.3f}"),
        ("llm_query_batched vs the SDK alone", "", "", f"{direct_wall:.3f} s", f"{wall / direct_wall:.3f}"),
        ("peak requests in flight at the provider", str(peak), f"<= {concurrency}", "", ""),
        (f"batch of {batch}, zero latency, per call", f"{zero / batch * 1000:.2f} ms", "", "", ""),
        (
            "sequential llm_query, zero latency, per call",
            f"{per_call * 1000:.2f} ms",
            "",
            f"{direct_per_call * 1000:.2f} ms direct SDK call",
            f"{per_call / direct_per_call:.2f}x",
        ),
    ]
    print_report("sub-call benchmark", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat and fewer sequential calls")
    anyio.run(main, parser.parse_args().quick)
