"""`rlm-mcp eval` as a command, with scripted fake models on loopback: the mechanics of the table, not accuracy.

The root follows each task's fixed strategy (at depth 2, S-NIAH's recursive one, whose children follow the
depth-1 strategy on their piece); the sub-model answers from the text it is given; the plain model is the
same fake reading the whole input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from rlm_mcp.evaluation import tasks
from testkit.fakes import FakeProvider
from testkit.roots import ScriptedRoot, code
from testkit.study import study_models


def fake_model(prompt: str, system: str | None, model: str) -> str:
    if prompt.startswith("TASK "):
        return tasks.answer(prompt, system, model)
    if "secret code" in prompt:  # the plain model, given the whole input
        return f"The code is {tasks.answer_niah(prompt)}."
    if "How many records" in prompt:
        return tasks.answer_oolong(prompt)
    return "I cannot tell from reading it once."


def scripted_root() -> ScriptedRoot:
    made = {
        "What is the secret code?": tasks.NIAH_STRATEGY,
        "How many records": tasks.OOLONG_STRATEGY,
        "Which people share": tasks.PAIRS_STRATEGY,
        tasks.NIAH_CHILD_QUESTION: tasks.NIAH_STRATEGY,
    }
    scripts = {question: [code(cell) for cell in cells] for question, cells in made.items()}
    recursive = {"What is the secret code?": [code(cell) for cell in tasks.NIAH_RECURSIVE_STRATEGY]}
    return ScriptedRoot(scripts, sub_answer=fake_model, recursive=recursive)


def fake_environment(provider: FakeProvider) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_MCP_", "ANTHROPIC_", "OPENAI_"))}
    env.update(
        ANTHROPIC_API_KEY="sk-ant-test",
        ANTHROPIC_BASE_URL=provider.base_url,
        RLM_MCP_CLAUDE_COMMAND="rlm-mcp-test-no-claude",
        RLM_MCP_CODEX_COMMAND="rlm-mcp-test-no-codex",
    )
    return env


def test_eval_runs_every_task_at_both_depths_against_the_plain_model(tmp_path: Path) -> None:
    root = scripted_root()
    with FakeProvider.start_in_thread(answer=root) as provider:
        env = fake_environment(provider)
        command = [
            sys.executable, "-m", "rlm_mcp", "eval", "--niah-mb", "0.2", "--records", "400", "--people", "60",
            "--workspace", str(tmp_path / "workspace"), "--json",
        ]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(row["task"], row["method"]) for row in rows] == [
        (name, method)
        for name in ("S-NIAH", "OOLONG counts", "pairs")
        for method in ("plain", "RLM, depth 1", "RLM, depth 2")
    ]
    by = {(row["task"], row["method"]): row for row in rows}
    for name in ("S-NIAH", "OOLONG counts", "pairs"):
        for depth in (1, 2):
            row = by[(name, f"RLM, depth {depth}")]
            assert row["correct"], row
            assert row["stopped"] == "answer variable" and row["root"][0] > 0 and row["sub"][0] > 0
    assert by[("S-NIAH", "plain")]["correct"] and not by[("pairs", "plain")]["correct"]
    # At depth 2 the S-NIAH root handed its pieces to children, each of which ran the depth-1 strategy.
    children = [c for c in root.conversations if tasks.NIAH_CHILD_QUESTION in json.dumps(c[:2])]
    assert children
    assert by[("S-NIAH", "RLM, depth 2")]["sub"][0] > by[("S-NIAH", "RLM, depth 1")]["sub"][0]


def test_eval_prints_one_table(tmp_path: Path) -> None:
    with FakeProvider.start_in_thread(answer=scripted_root()) as provider:
        env = fake_environment(provider)
        command = [sys.executable, "-m", "rlm_mcp", "eval", "--tasks", "niah", "--niah-mb", "0.1", "--depths", "1",
                   "--workspace", str(tmp_path / "workspace")]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[2] == "| task | method | correct | root tokens in / out | sub tokens in / out | cost | wall s |"
    assert lines[4].startswith("| S-NIAH (0.1 MB) | plain | yes |")
    assert lines[5].startswith("| S-NIAH (0.1 MB) | RLM, depth 1 | yes |")


def test_the_memory_study_runs_each_input_without_then_with_the_first_pass_memory(tmp_path: Path) -> None:
    root, distiller = study_models()
    with FakeProvider.start_in_thread(answer=root) as provider:
        env = fake_environment(provider)
        command = [sys.executable, "-m", "rlm_mcp", "eval", "--study", "memory", "--inputs", "2", "--records", "400",
                   "--json"]  # fmt: skip
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(row["input"], row["pass"][0]) for row in rows] == [(1, "1"), (2, "1"), (1, "2"), (2, "2")]
    assert all(row["correct"] for row in rows)
    first, second = rows[:2], rows[2:]
    # Pass 1 distilled (two sub-calls each, in its own empty memory); pass 2 read none of pass 2's lessons.
    assert all(row["learning"][0] == 2 for row in first) and all(row["learning"][0] == 0 for row in second)
    assert len(distiller.logs) == 2 and all("chunk(context, 50, by='lines')" in log for log in distiller.logs)
    # The second pass's root was offered the behavior and the finding in its system prompt, and followed it.
    offered = ["From this workspace's memory" in (system or "") for system in root.systems]
    assert offered == [False] * 8 + [True] * 4  # 4 turns a task in pass 1, 2 in pass 2
    assert "found in this same content (context): finding (unverified, from session s" in (root.systems[-1] or "")
    assert '): "one record per line' in (root.systems[-1] or "")  # quoted data, with its provenance
    assert all(row["tool_calls"] == 4 and row["sub_calls"] == 8 for row in first)
    assert all(row["tool_calls"] == 2 and row["sub_calls"] == 2 for row in second)
