"""Measure the workspace memory: what it changes on repeated tasks, and what it costs on every call.

Why: a memory is worth keeping only if later sessions need fewer turns, less reading and fewer sub-calls,
and only if it costs the calls that do not use it next to nothing. First the repeated-task study of
`rlm-mcp eval --study memory` with scripted models (testkit/study.py: a root that follows a behavior it is
offered, a distiller that proposes one), each input without and then with the memory the first pass built.
Then the overheads, each against a baseline taken in the same run: load_context with the memory off, on
with a 500-behavior handbook, and on with a finding filed for this very file (whose digest must then be
computed, once, then known by the file's identity); a sub-call paid for against the same call answered
from the cross-session cache; and one distillation of a session against one sub-call.

Run: python bench/bench_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from mcp import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report
from rlm_mcp.config import Settings, load_settings
from rlm_mcp.evaluation.study import COLUMNS as STUDY_COLUMNS
from rlm_mcp.evaluation.study import memory_study, study_row, totals
from rlm_mcp.memory import handbook
from rlm_mcp.memory.database import Database
from rlm_mcp.surface.server import build_server
from rlm_mcp.units import MiB
from testkit.fakes import FakeProvider
from testkit.study import study_models


def settings_for(directory: Path, **overrides: Any) -> Settings:
    values = {"roots": [directory], "workspace": directory / "ws", "structured_content": True, "timeout_s": 300}
    values["memory_auto_approve"] = True  # measures the memory as offered: what models filed, approved at once
    return load_settings({**values, **overrides}, environ={})


def seed_handbook(workspace: Path, count: int) -> None:
    database = Database(workspace)
    words = ["log", "csv", "json", "repo", "module", "error", "count", "chunk", "grep", "batch", "merge", "split"]

    def fill(connection: Any) -> None:
        for index in range(count):
            topic = " ".join(words[(index + step) % len(words)] for step in range(4))
            behavior = handbook.proposed(f"behavior_{index}_{topic}", f"when {topic}: do step {index}", topic, topic)
            connection.execute(
                "INSERT INTO behaviors (name, instruction, applies, input_kind, created, updated, status) "
                "VALUES (?, ?, ?, ?, 0, 0, 'approved')",
                (behavior.name, behavior.instruction, behavior.applies, behavior.input_kind),
            )

    database.run(fill)
    database.close()


def forget_digests(workspace: Path) -> None:
    database = Database(workspace)
    database.run(lambda connection: connection.execute("DELETE FROM file_digests"))
    database.close()


async def load_times(settings: Settings, path: Path, n: int, forget: bool = False) -> tuple[list[float], int]:
    """Seconds of `n` loads after an untimed one (which starts the worker, and is the only one shown the
    memory: each line is said once a session), and how many characters that first result had; with
    `forget`, the file's known digest is dropped first, so the first timed load hashes it."""
    times = []
    async with Client(build_server(settings)) as client:
        shown = await client.call_tool("load_context", {"path": str(path), "name": "logs"})
        chars = len(shown.content[0].text)  # type: ignore[union-attr]
        if forget:
            forget_digests(settings.workspace)
        for _ in range(n):
            started = time.perf_counter()
            result = await client.call_tool("load_context", {"path": str(path), "name": "logs"})
            times.append(time.perf_counter() - started)
            if result.is_error:
                raise RuntimeError(result.content[0].text)  # type: ignore[union-attr]
    return times, chars


async def call_time(settings: Settings, prompts: list[str]) -> float:
    """Median seconds of one llm_query, timed inside the REPL."""
    code = (
        "import time\nts = []\n"
        f"for p in {prompts!r}:\n    t = time.perf_counter(); llm_query(p); ts.append(time.perf_counter() - t)\n"
        "print(sorted(ts)[len(ts) // 2])"
    )
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("run_code", {"code": code})
        data = result.structured_content or {}
        if data.get("outcome") != "ok":
            raise RuntimeError(result.content[0].text)  # type: ignore[union-attr]
        return float(str(data["stdout"]).strip())


async def distill_time(settings: Settings, cells: int) -> float:
    async with Client(build_server(settings)) as client:
        await client.call_tool("load_context", {"text": "record 1 | user u1 | fine", "name": "context"})
        for index in range(cells):
            await client.call_tool("run_code", {"code": f"x{index} = grep('record', context, count=True)"})
        started = time.perf_counter()
        result = await client.call_tool("run_code", {"code": "print(distill())"})
        elapsed = time.perf_counter() - started
        if "distilled" not in result.content[0].text:  # type: ignore[union-attr]
            raise RuntimeError(result.content[0].text)  # type: ignore[union-attr]
        return elapsed


async def main(quick: bool) -> None:
    inputs, records, n = (2, 400, 3) if quick else (3, 2_000, 7)
    root, _ = study_models()
    async with FakeProvider.running(answer=root) as fake:
        os.environ.update(ANTHROPIC_API_KEY="bench-key", ANTHROPIC_BASE_URL=fake.base_url)
        with tempfile.TemporaryDirectory() as name:
            directory = Path(name)
            study = argparse.Namespace(inputs=inputs, records=records)
            rows = await memory_study(settings_for(directory), study)
            print_report(
                f"eval --study memory with scripted models ({records:,} records, {inputs} inputs)",
                [*(study_row(row) for row in rows), *totals(rows)],
                STUDY_COLUMNS,
            )
            print()

            log = directory / "app.log"
            log.write_bytes(b"2024-06-01T12:00:00Z INFO svc request ok\n" * (10 * MiB // 42))
            off, plain_chars = await load_times(settings_for(directory, memory="off"), log, n)
            seed_handbook(directory / "ws", 500)
            on, _ = await load_times(settings_for(directory), log, n)
            async with Client(build_server(settings_for(directory, distill="off"))) as client:
                await client.call_tool("load_context", {"path": str(log), "name": "logs"})
                for fact in ("one request per line", "timestamps are UTC, ISO 8601", "only INFO lines: nothing failed"):
                    await client.call_tool("run_code", {"code": f"remember({fact!r})"})
            (first_digest, *known), memory_chars = await load_times(settings_for(directory), log, n + 1, forget=True)

            prompts = [f"summarise part {index}" for index in range(n * 3)]
            paid = await call_time(settings_for(directory, cache_days=0), prompts)
            await call_time(settings_for(directory), prompts)  # fills the cache
            hit = await call_time(settings_for(directory), prompts)
            plain_call = await call_time(settings_for(directory, cache_days=0), [f"again {p}" for p in prompts])
            distilled = await distill_time(settings_for(directory, cache_days=0), 20)

    def ms(value: float) -> str:
        return f"{value * 1000:.1f} ms"

    base = statistics.median(off)
    rows = [
        ("load_context, 10 MB file, memory off (median)", ms(base), "", "baseline", "1.0x"),
        ("... memory on, 500-behavior handbook", ms(statistics.median(on)), "", ms(base),
         f"{statistics.median(on) / base:.2f}x"),
        ("... a finding filed for this content: first load (hashes the file)", ms(first_digest), "", ms(base),
         f"{first_digest / base:.2f}x"),
        ("... later loads (digest known by the file's identity)", ms(statistics.median(known)), "", ms(base),
         f"{statistics.median(known) / base:.2f}x"),
        ("load result the model reads: memory off", f"{plain_chars:,} chars", "", "", ""),
        ("... on: 3 behaviors of 500, 3 findings for this content", f"{memory_chars:,} chars", "",
         f"{plain_chars:,} chars", f"{memory_chars / plain_chars:.1f}x"),
        ("sub-call answered by the provider (median)", ms(paid), "", "baseline", "1.0x"),
        ("... the same call from the cross-session cache", ms(hit), "", ms(paid), f"{hit / paid:.2f}x"),
        ("distill() of a 20-cell session (2 sub-calls)", ms(distilled), "", ms(plain_call),
         f"{distilled / plain_call:.1f}x"),
    ]  # fmt: skip
    print_report(f"memory overheads (fake provider on loopback, no latency; n={n})", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    anyio.run(main, parser.parse_args().quick)
