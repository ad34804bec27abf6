"""The benchmarks still run: a small slice, as CI's smoke test. Timings are printed, never asserted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from testkit.fakes import FakeProvider, ToolUse

REPO = Path(__file__).resolve().parents[1]


def test_the_long_context_tasks_are_solved_end_to_end() -> None:
    done = subprocess.run(
        [sys.executable, "bench/bench_tasks.py", "--smoke"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for task in ("S-NIAH, 1,000,000 chars", "OOLONG counts, 500 records", "pairs, 200 records"):
        row = next(line for line in done.stdout.splitlines() if task in line)
        assert "| correct;" in row, row


def test_run_all_writes_every_section(tmp_path: Path) -> None:
    output = tmp_path / "benchmarks.md"
    done = subprocess.run(
        [sys.executable, "bench/run_all.py", "--smoke", "--output", str(output), "--skip", "bench_contexts.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    text = output.read_text()
    assert text.startswith("# Benchmarks\n\nWritten by `python3 bench/run_all.py --smoke`")
    for title in ("## Core", "## Sub-calls", "## Sandbox", "## Sessions", "## Long-context tasks"):
        assert title in text
    assert "**Failed**" not in text and text.count("| measurement | value | target | baseline | ratio |") == 5


def test_the_real_model_driver_runs_a_task_against_a_fake_root_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/real_model.py's loop (tools offered, tool_use answered through MCP, final text checked), with a
    fake Anthropic API that plays a root model following the S-NIAH strategy, and the sub-model too."""
    sys.path.insert(0, str(REPO))
    from bench import real_model, tasks

    task = tasks.make_niah(tmp_path, 200_000, seed=5)
    steps = [
        ToolUse("load_context", {"path": task.file.name}),
        *(ToolUse("run_code", {"code": c}) for c in task.strategy),
    ]

    def root_or_sub_model(prompt: str, system: str | None, model: str) -> object:
        if prompt.startswith("TASK "):
            return tasks.answer(prompt, system, model)  # a sub-call from inside the REPL
        if "Use the tools" in prompt:
            root_or_sub_model.turn = 0  # type: ignore[attr-defined]
        turn = root_or_sub_model.turn  # type: ignore[attr-defined]
        root_or_sub_model.turn += 1  # type: ignore[attr-defined]
        if turn < len(steps):
            return steps[turn]
        code = re.search(r"Out: '(\d+)'|(\d{6})", prompt)
        return f"The secret code is:\n{code.group(1) or code.group(2) if code else 'unknown'}"

    with FakeProvider.start_in_thread(answer=root_or_sub_model) as provider:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-fake")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", provider.base_url)
        result = anyio.run(real_model.solve, task, tmp_path, "claude-sonnet-4-6")
        names = [request.body.get("tools", [{}])[0].get("name") for request in provider.requests if request.body]
    assert result["correct"], result
    assert result["sub"]["calls"] == 1 and result["root_tokens"][0] > 0 and result["root_cost"] > 0
    assert "load_context" in names  # the server's own tools were offered to the root model
