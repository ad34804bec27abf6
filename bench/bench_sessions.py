"""Sessions that survive, and many at once: snapshot cost by namespace size, and HTTP throughput by sessions.

Why: every successful cell snapshots what it changed, so the snapshot must cost little next to the cell,
and nothing for a trivial cell; and one HTTP server must serve many clients without the server becoming
the bottleneck. The worker runs sandboxed as a session's would; the HTTP server is the `rlm-mcp` command,
driven by real SDK clients on 127.0.0.1. Baselines in the same run: the same cells with snapshots off.

Run: python bench/bench_sessions.py [--quick]
"""

from __future__ import annotations

import argparse
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report
from bench.workers import worker_host

SIZES = {"1 KB": 1_000, "1 MB": 1_000_000, "10 MB": 10_000_000, "100 MB": 100_000_000}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def snapshot_costs(tmp: Path, repeats: int) -> list[tuple[str, str, str, str, str]]:
    rows = []
    host = worker_host(tmp)
    await host.start()
    cell = 0

    async def run(code: str) -> dict:
        nonlocal cell
        cell += 1
        outcome = await host.call({"op": "exec", "code": code, "cell": cell}, timeout=300, grace=1)
        reply = outcome.reply or {}
        if reply.get("error"):
            raise RuntimeError(reply["error"])
        return reply

    async def trivial(count: int) -> float:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            await run("1")
            samples.append(time.perf_counter() - started)
        return statistics.median(samples)

    try:
        await run("values = {}")
        without = await trivial(200)
        snapshots = host.scratch_dir / "snapshot"  # the worker writes its snapshots in its scratch directory
        await host.call({"op": "persist", "dir": str(snapshots), "max_bytes": 1 << 30}, timeout=10, grace=1)
        for label, size in SIZES.items():
            times = []
            for repeat in range(repeats):
                reply = await run(f"payload = 'x' * {size} + '{repeat}'")
                times.append(reply["snapshot"]["elapsed_s"])
            rows.append(
                (
                    f"snapshot of a changed {label} variable, median (n={repeats})",
                    f"{statistics.median(times) * 1000:.2f} ms",
                    "",
                    "",
                    "",
                )
            )
        await run("small = list(range(1000)); notes = {'a': [1, 2]}")
        with_snapshots = await trivial(200)
        rows.append(
            (
                "trivial cell with snapshots on (100 MB str + small mutables in the namespace), p50",
                f"{with_snapshots * 1000:.3f} ms",
                "",
                f"{without * 1000:.3f} ms snapshots off",
                f"{with_snapshots / without:.2f}x",
            )
        )
    finally:
        await host.close()
    return rows


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def http_throughput(tmp: Path, seconds: float) -> list[tuple[str, str, str, str, str]]:
    port = free_port()
    command = [sys.executable, "-m", "rlm_mcp", "--transport", "http", "--port", str(port), "--root", str(tmp)]
    token = secrets.token_urlsafe(16)
    command += ["--workspace", str(tmp / "ws-http"), "--max-sessions", "100", "--auth-token", token]
    command += ["--max-new-sessions-per-minute", "1000", "--structured-content"]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/mcp"
    rows = []
    try:
        for _ in range(200):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        single = None
        for sessions in (1, 8, 32):
            latencies: list[float] = []

            async def client_loop(latencies: list[float]) -> None:
                async with (
                    httpx2.AsyncClient(timeout=60, headers={"authorization": f"Bearer {token}"}) as http,
                    Client(streamable_http_client(url, http_client=http)) as client,
                ):
                    first = await client.call_tool("run_code", {"code": "1"})
                    handle = (first.structured_content or {})["session"]
                    deadline = time.perf_counter() + seconds
                    while time.perf_counter() < deadline:
                        started = time.perf_counter()
                        await client.call_tool("run_code", {"code": "1", "session": handle})
                        latencies.append(time.perf_counter() - started)

            started = time.perf_counter()
            async with anyio.create_task_group() as group:
                for _ in range(sessions):
                    group.start_soon(client_loop, latencies)
            elapsed = time.perf_counter() - started
            rate = len(latencies) / elapsed
            single = single or rate
            rows.append(
                (
                    f"trivial run_code over HTTP, {sessions} concurrent session(s)",
                    f"{rate:,.0f} calls/s",
                    "",
                    f"p50 {statistics.median(latencies) * 1000:.1f} ms",
                    f"{rate / single:.2f}x one session",
                )
            )
            log(f"{sessions} sessions: {rate:.0f} calls/s")
    finally:
        server.terminate()
        server.wait(10)
    return rows


async def main(quick: bool) -> None:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        rows = await snapshot_costs(tmp, 3 if quick else 5)
        log("snapshots done")
        rows += await http_throughput(tmp, 2.0 if quick else 5.0)
    print_report("sessions benchmark", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, shorter HTTP runs")
    anyio.run(main, parser.parse_args().quick)
