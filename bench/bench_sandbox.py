"""What the sandbox costs: worker start and a trivial cell, with every layer vs. with the sandbox off.

Why: the lock-down is applied on every worker start (each session, each restart after a crash) and its
seccomp filter and audit hook sit on every system call and Python event of every cell, so its price must
be small enough that nobody turns it off for speed. Both modes run interleaved in one process, so the
machine's noise falls on both alike. Prints a Markdown table to stdout, progress to stderr.

Run: python bench/bench_sandbox.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report
from bench.workers import worker_host

MODES = ("auto", "off")
# A cell that does some ordinary work: imports, file writes and reads, threads (system calls under seccomp).
WORKLOAD = """
import json, threading
for i in range(200):
    with open('w.json', 'w') as f:
        json.dump({'i': i}, f)
    json.load(open('w.json'))
threads = [threading.Thread(target=sum, args=(range(1000),)) for _ in range(20)]
[t.start() for t in threads]; [t.join() for t in threads]
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def start_once(tmp: Path, mode: str) -> tuple[float, float]:
    host = worker_host(tmp, mode)
    started = time.perf_counter()
    await host.start()
    elapsed = time.perf_counter() - started
    lockdown = host.lockdown_s
    await host.close()
    return elapsed, lockdown


async def cells(tmp: Path, mode: str, code: str, count: int) -> list[float]:
    host = worker_host(tmp, mode)
    await host.start()
    samples = []
    try:
        for cell in range(1, count + 1):
            started = time.perf_counter()
            outcome = await host.call({"op": "exec", "code": code, "cell": cell}, timeout=30, grace=1)
            samples.append(time.perf_counter() - started)
            reply = outcome.reply or {}
            if outcome.fate != "ok" or reply.get("error"):
                raise RuntimeError(f"cell failed under sandbox={mode}: {reply.get('error') or outcome.cause}")
    finally:
        await host.close()
    return samples


async def main(quick: bool) -> None:
    starts, trivial, workload = (5, 100, 5) if quick else (20, 500, 20)
    start_s: dict[str, list[float]] = {mode: [] for mode in MODES}
    lockdown_s: dict[str, list[float]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for _ in range(starts):  # interleaved, so drift in the machine's load hits both modes alike
            for mode in MODES:
                elapsed, lockdown = await start_once(tmp, mode)
                start_s[mode].append(elapsed)
                lockdown_s[mode].append(lockdown)
        log("starts done")
        trivial_s = {mode: await cells(tmp, mode, "1", trivial) for mode in MODES}
        log("trivial cells done")
        work_s = {mode: await cells(tmp, mode, WORKLOAD, workload) for mode in MODES}
        log("workload cells done")

    def ms(value: float) -> str:
        return f"{value * 1000:.2f} ms"

    def row(label: str, samples: dict[str, list[float]], target: str) -> tuple[str, str, str, str, str]:
        ours, off = statistics.median(samples["auto"]), statistics.median(samples["off"])
        return (label, ms(ours), target, f"{ms(off)} sandbox off", f"{ours / off:.2f}x ({(ours - off) * 1000:+.2f} ms)")

    rows = [
        row(f"worker start to ready, median (n={starts})", start_s, "+< 20 ms"),
        (
            "time the worker spends locking itself down, median",
            ms(statistics.median(lockdown_s["auto"])),
            "",
            ms(statistics.median(lockdown_s["off"])) + " sandbox off",
            "",
        ),
        row(f"trivial cell round trip (`1`), p50 (n={trivial})", trivial_s, "nothing measurable"),
        row(f"cell with 200 file writes/reads and 20 threads, median (n={workload})", work_s, ""),
    ]
    print_report("sandbox benchmark", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    anyio.run(main, parser.parse_args().quick)
