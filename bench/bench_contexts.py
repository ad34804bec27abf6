"""Huge inputs: load, grep, chunk and search at 10 MB, 100 MB and 1 GB, against plain Python on a `str`.

Why: an RLM is only as useful as the largest input it can hold and how fast code can look through it. The
REPL worker is started as a session starts it (sandboxed, default settings: files from 64 MiB up are
memory-mapped); the baseline is what a model's code would do without rlm-mcp, in a fresh interpreter:
`open().read()` into a `str`, `re` over it, slicing, and counting query words per chunk (which keeps
nothing between queries, so its later queries cost the same). `chunk` over a mapped text returns pieces
decoded when read: the step "every piece read" decodes them all, against slicing the `str` and reading
it. Peak memory is the process's high-water mark (VmHWM; for a mapped file it includes the file's pages,
which the kernel shares and may evict) and its private memory after the steps (RssAnon, which a mapped file
does not grow).

Run: python bench/bench_contexts.py [--quick]   (--quick: 10 MB and 100 MB only)
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report
from bench.workers import worker_host

MB = 1_000_000
STEPS = ("load", "grep", "chunk", "chunk, every piece read", "search", "search, same words again",
         "search, one word seen before")  # fmt: skip
TARGETS = {"load": "<= 1 s", "grep": "<= 2 s", "search": "<= 3 s", "chunk": "<= 1.0x"}
PATTERN = r"NEEDLE-\d+"
QUERY = "magic number"

BASELINE = r"""
import json, re, resource, sys, time
path, pattern, query = sys.argv[1], sys.argv[2], sys.argv[3]
times = {}
started = time.perf_counter(); text = open(path, encoding="utf-8").read(); times["load"] = time.perf_counter() - started
started = time.perf_counter()
hits = [m.group() for m in re.finditer("^.*(?:" + pattern + ").*$", text, re.M)]
times["grep"] = time.perf_counter() - started
started = time.perf_counter(); chunks = [text[i:i + 1_000_000] for i in range(0, len(text), 1_000_000)]
times["chunk"] = time.perf_counter() - started
started = time.perf_counter()
read = sum(len(c) for c in [text[i:i + 1_000_000] for i in range(0, len(text), 1_000_000)])
times["chunk, every piece read"] = time.perf_counter() - started
started = time.perf_counter()
words = query.lower().split()
pieces = [text[i:i + 2000] for i in range(0, len(text), 2000)]
best = max(range(len(pieces)), key=lambda i: sum(pieces[i].lower().count(w) for w in words))
times["search"] = time.perf_counter() - started
times["search, one word seen before"] = times["search, same words again"] = times["search"]  # it keeps nothing
times["hits"] = len(hits)
times["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(times))
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def write_log(path: Path, size: int) -> None:
    """Log-like text with a little non-ASCII, one needle at a seeded random depth."""
    rng = random.Random(size)
    lines = [
        f"2024-06-01T{h:02d}:{m:02d}:00Z {level} svc-{n} user={n * 7} request ok — naïve café {n}\n"
        for h, m, level, n in (
            (rng.randrange(24), rng.randrange(60), rng.choice(["INFO", "WARN"]), i) for i in range(5000)
        )
    ]
    block = "".join(lines).encode()
    depth = rng.randrange(size // len(block) + 1)
    with open(path, "wb") as handle:
        for index in range(size // len(block) + 1):
            handle.write(block)
            if index == depth:
                handle.write(b"NEEDLE-4242: the magic number is 17\n")


def memory(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(fields["VmHWM"].split()[0]) / 1024, int(fields["RssAnon"].split()[0]) / 1024


async def ours(tmp: Path, path: Path) -> dict[str, float]:
    host = worker_host(tmp)
    await host.start()
    assert host._worker_pid is not None
    times: dict[str, float] = {}
    try:
        size = path.stat().st_size
        request = {"op": "load", "name": "context", "kind": "file", "path": str(path), "size": size}
        request.update(mmap_bytes=64 * 1024 * 1024, max_bytes=2 * 1024**3)
        started = time.perf_counter()
        outcome = await host.call(request, timeout=600, grace=1)
        times["load"] = time.perf_counter() - started
        if not (outcome.reply or {}).get("ok"):
            raise RuntimeError(f"load failed: {outcome}")
        times["kind_mapped"] = float(outcome.reply["kind"] == "mapped")  # type: ignore[index]
        steps = {
            "grep": f"hits = grep(r'{PATTERN}', context)",
            "chunk": "chunks = chunk(context, 1_000_000)\ndel chunks",
            "chunk, every piece read": "read = sum(len(c) for c in chunk(context, 1_000_000))",
            "search": f"best = search('{QUERY}', context, k=1)",
            "search, same words again": f"again = search('{QUERY}', context, k=1)",
            "search, one word seen before": "other = search('magic needle', context, k=1)",
        }
        for step, code in steps.items():
            started = time.perf_counter()
            outcome = await host.call({"op": "exec", "code": code, "cell": 1}, timeout=900, grace=1)
            times[step] = time.perf_counter() - started
            error = (outcome.reply or {}).get("error") or (outcome.cause if outcome.fate != "ok" else None)
            if error:
                log(f"{step} failed: {str(error)[-300:]}")
                times[step] = float("nan")
        check = await host.call(
            {"op": "exec", "code": "len(hits), 'magic' in best[0]['text']", "cell": 2}, timeout=60, grace=1
        )
        times["found"] = float((check.reply or {}).get("result") == "(1, True)")
        times["peak_mib"], times["private_mib"] = memory(host._worker_pid)
    finally:
        await host.close()
    return times


def baseline(path: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", BASELINE, str(path), PATTERN, QUERY], capture_output=True, text=True, timeout=3600
    )
    if done.returncode != 0:
        log(f"baseline failed: {done.stderr[-500:]}")
        return {}
    return json.loads(done.stdout)


async def main(quick: bool) -> None:
    sizes = [10 * MB, 100 * MB] if quick else [10 * MB, 100 * MB, 1000 * MB]
    rows = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        for size in sizes:
            path = tmp / f"log-{size // MB}mb.txt"
            write_log(path, size)
            log(f"{size // MB} MB written")
            mine = await ours(tmp, path)
            plain = baseline(path)
            log(f"{size // MB} MB: ours {mine}, plain {plain}")
            label = f"{size // MB:,} MB"
            for step in STEPS:
                theirs = plain.get(step, float("nan"))
                rows.append(
                    (
                        f"{label}: {step}" + (" (memory-mapped)" if step == "load" and mine["kind_mapped"] else ""),
                        f"{mine[step]:.3f} s",
                        TARGETS.get(step, "") if size >= 1000 * MB else "",
                        f"{theirs:.3f} s plain str + re",
                        f"{mine[step] / theirs:.2f}x" if theirs == theirs and theirs > 0 else "",
                    )
                )
            rows.append(
                (
                    f"{label}: peak memory (VmHWM) / private after",
                    f"{mine['peak_mib']:,.0f} / {mine['private_mib']:,.0f} MiB",
                    "",
                    f"{plain.get('peak_mib', float('nan')):,.0f} MiB plain",
                    "",
                )
            )
            rows.append(
                (f"{label}: needle found by grep and by search", "yes" if mine["found"] else "NO", "yes", "", "")
            )
            path.unlink()
    print_report("contexts benchmark", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 MB and 100 MB only")
    anyio.run(main, parser.parse_args().quick)
