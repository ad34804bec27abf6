"""`rlm-mcp ask` as a command: a scripted root model on loopback answers through the same engine as rlm_query."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.fakes import FakeProvider
from testkit.roots import ScriptedRoot, code


@pytest.fixture
def root() -> ScriptedRoot:
    return ScriptedRoot({}, sub_answer=lambda prompt, system, model: f"sub says {prompt.split()[-1]}")


@pytest.fixture
def provider(root: ScriptedRoot) -> Iterator[FakeProvider]:
    with FakeProvider.start_in_thread(answer=root) as fake:
        yield fake


def ask(provider: FakeProvider, tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RLM_MCP_", "ANTHROPIC_", "OPENAI_"))}
    env.update(
        ANTHROPIC_API_KEY="sk-ant-test",
        ANTHROPIC_BASE_URL=provider.base_url,
        RLM_MCP_WORKSPACE=str(tmp_path / "workspace"),
        RLM_MCP_CLAUDE_COMMAND="rlm-mcp-test-no-claude",
        RLM_MCP_CODEX_COMMAND="rlm-mcp-test-no-codex",
        RLM_MCP_RETRY_BASE_S="0.01",
    )
    command = [sys.executable, "-m", "rlm_mcp", "ask", *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_ask_answers_from_code_it_ran_and_says_what_it_cost(
    root: ScriptedRoot, provider: FakeProvider, tmp_path: Path
) -> None:
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("ok\nERROR disk full\nok\n")
    (tmp_path / "notes.txt").write_text("see the logs\n")
    root.scripts["Which errors"] = [
        code("print(type(context).__name__, len(context), context_2.strip())"),
        code("hits = [l for t in context.values() for l in t.splitlines() if 'ERROR' in l]\nprint(llm_query(hits[0]))"),
        lambda told: f"Found: {told.splitlines()[0]}",
    ]
    done = ask(provider, tmp_path, str(tmp_path / "logs"), str(tmp_path / "notes.txt"), "Which errors happened?")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Found: sub says full\n"
    assert "answered in 3 turns" in done.stderr and "sub-calls: 1 calls" in done.stderr
    first_result = json.dumps(root.conversations[1])
    assert "dict 1 see the logs" in first_result  # a directory is a files dict; the second path is context_2


def test_ask_json_reports_root_and_sub_usage(root: ScriptedRoot, provider: FakeProvider, tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("alpha beta gamma\n")
    root.scripts["Count"] = [code("answer = str(len(context.split()))")]
    done = ask(provider, tmp_path, str(tmp_path / "doc.txt"), "Count the words", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == "3" and result["stopped"] == "answer variable" and result["partial"] is False
    assert result["root"]["calls"] == 1 and result["sub"]["calls"] == 0
    assert result["total"]["input_tokens"] == result["root"]["input_tokens"] > 0


def test_ask_with_children_writes_a_trace_page(root: ScriptedRoot, provider: FakeProvider, tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("one two three four\n")
    root.scripts["Split"] = [
        code("print(rlm_query_batched(['Half: count', 'Half: count'], [context[:8], context[8:]]))"),
        lambda told: f"halves: {told.splitlines()[0]}",
    ]
    root.scripts["Half"] = [code("answer = str(len(context.split()))")]
    page = tmp_path / "trace.html"
    done = ask(provider, tmp_path, str(tmp_path / "doc.txt"), "Split and count", "--json", "--trace-html", str(page))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == "halves: ['2', '2']"
    assert len(result["children"]) == 2 and {c["stopped"] for c in result["children"]} == {"answer variable"}
    assert result["sub"]["calls"] == 2  # each child's one root turn counts as a call of the parent
    assert "child RLM" in page.read_text()
    assert not list((tmp_path / "workspace" / "sessions").iterdir())  # nothing of the run is left behind


def test_a_root_that_never_answers_exits_3_with_its_partial_answer(
    root: ScriptedRoot, provider: FakeProvider, tmp_path: Path
) -> None:
    (tmp_path / "doc.txt").write_text("x\n")
    root.scripts["Loop"] = [code("x = 1"), code("x = 2"), "partial: x is 2"]
    done = ask(provider, tmp_path, str(tmp_path / "doc.txt"), "Loop forever", "--child-max-iterations", "2")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "partial: x is 2\n" and "stopped (iterations) in 2 turns" in done.stderr


def test_a_bad_path_is_a_clear_error_with_exit_code_2(provider: FakeProvider, tmp_path: Path) -> None:
    done = ask(provider, tmp_path, str(tmp_path / "missing.log"), "What?")
    assert done.returncode == 2
    assert "missing.log: no such file or directory" in done.stderr and done.stdout == ""
    done = ask(provider, tmp_path, "only-a-question")
    assert done.returncode == 2 and "give one or more paths, then the question" in done.stderr
    assert provider.count == 0


def test_a_root_model_that_fails_exits_1(provider: FakeProvider, tmp_path: Path) -> None:
    (tmp_path / "doc.txt").write_text("x\n")
    provider.fail_when("Anything", status=400)
    done = ask(provider, tmp_path, str(tmp_path / "doc.txt"), "Anything")
    assert done.returncode == 1
    assert "the root model's call failed" in done.stderr and "400" in done.stderr
