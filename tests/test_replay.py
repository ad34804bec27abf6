"""`rlm-mcp replay`: a session recorded with a fake model on loopback, then replayed with no model at all.

The recording is a real session (the SDK client, the real worker, the anthropic SDK against the fake
provider); the replay is the real command, run as a console script or in-process, with no provider
running and no API key, so any answer it gives can only have come from the trace.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from rlm_mcp.commands.replay import main
from rlm_mcp.surface.server import build_server
from rlm_mcp.trace import TEXT_LIMIT, shorten
from testkit.fakes import FakeProvider
from testkit.roots import ScriptedRoot, code
from tests.conftest import load, make_settings, run, text_of
from tests.test_stdio import console_script

LONG_ANSWER = 6_000  # past the 4,000 characters a trace keeps of other texts
BOOK = "chapter one\nchapter two\nchapter three\n"
CELLS = (
    "parts = book.splitlines()\nnotes = llm_query_batched([f'part: {p}' for p in parts])",
    "print(notes)\nprint(len(llm_query('the long one')))\n"
    "try:\n    llm_query('a forbidden topic')\nexcept LLMError as e:\n    print('failed:', e.kind)",
    "raise ValueError('the needle was not found')",
)


def fake_answer(prompt: str, system: str | None, model: str) -> str:
    return "w" * LONG_ANSWER if prompt == "the long one" else f"summary of {prompt}"


@pytest.fixture(autouse=True)
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """No API key, no provider URL and no rlm-mcp setting of the developer's reaches a replay."""
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "RLM_MCP_", "OPENAI_")):
            monkeypatch.delenv(name)


def record(
    tmp_path: Path,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    cells: Sequence[str] = CELLS,
    answer: Any = fake_answer,
) -> Path:
    """A session recorded against the fake model: the book loaded, then `cells` run. Returns its trace."""
    (data_dir / "book.txt").write_text(BOOK)

    async def session() -> None:
        async with FakeProvider.running(answer=answer) as fake:
            fake.fail_when("a forbidden topic", status=400, message="this topic is not allowed")
            monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
            monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
            async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
                loaded = await load(client, path=str(data_dir / "book.txt"), name="book")
                assert not loaded.is_error, text_of(loaded)
                for source in cells:
                    await run(client, source)

    try:
        anyio.run(session)
    finally:
        monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
        monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    (trace,) = (tmp_path / "workspace" / "sessions").glob("*/trace.jsonl")
    return trace


def replay(trace: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, dict[str, Any]]:
    """Replay in-process (the same main the console script runs); the exit code and the JSON report."""
    capsys.readouterr()
    exit_code = main([str(trace), "--root", str(data_dir), "--json", *flags])
    return exit_code, json.loads(capsys.readouterr().out)


def events_of(trace: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]


def edit(trace: Path, change: Callable[[dict[str, Any]], None]) -> None:
    events = events_of(trace)
    for event in events:
        change(event)
    trace.write_text("".join(json.dumps(event) + "\n" for event in events))


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step"]: step for step in report["steps"]}


def test_a_session_replays_the_same_with_no_model(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = record(tmp_path, data_dir, monkeypatch)
    sub_calls = [event for event in events_of(trace) if event["type"] == "sub_call"]
    assert len(sub_calls) == 5 and all(len(event["request_sha256"]) == 64 for event in sub_calls)
    assert max(len(event.get("answer") or "") for event in sub_calls) == LONG_ANSWER  # kept whole
    assert any(event.get("kind") and event.get("error") for event in sub_calls)  # the refused one

    environment = {name: value for name, value in os.environ.items() if not name.startswith(("ANTHROPIC_", "RLM_MCP_"))}
    done = subprocess.run(
        [console_script(), "replay", str(trace), "--root", str(data_dir)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for expected in ("load_context book: same", "cell 1: same", "cell 2: same", "cell 3: same"):
        assert expected in lines, done.stdout
    assert lines[-1] == "3 cells same, 0 differ; 1 other calls same, 0 differ; 0 sub-calls not in the record"


def test_a_changed_data_file_is_reported_where_it_shows(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = record(tmp_path, data_dir, monkeypatch)
    (data_dir / "book.txt").write_text(BOOK + "chapter four\n")
    exit_code, report = replay(trace, data_dir, capsys)
    assert exit_code == 1
    by_step = steps(report)
    assert by_step["load_context book"]["differs_in"] == ["chars"]
    first = by_step["cell 1"]  # a fourth part: a prompt the session never sent
    assert first["status"] == "differs" and first["not_recorded"] == 1
    assert first["sub_calls"] == {"recorded": 3, "replayed": 4}
    assert "stdout" in by_step["cell 2"]["differs_in"]  # it printed the notes, now four of them
    assert by_step["cell 3"]["status"] == "same"
    assert report["not_recorded"] == 1
    assert report["summary"].endswith("1 sub-calls not in the record")


def test_an_edited_answer_shows_in_the_cell_that_printed_it(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = record(tmp_path, data_dir, monkeypatch)

    def change(event: dict[str, Any]) -> None:
        if event["type"] == "sub_call" and event.get("prompt") == "part: chapter two":
            event["answer"] = "a different summary"

    edit(trace, change)
    exit_code, report = replay(trace, data_dir, capsys)
    assert exit_code == 1
    by_step = steps(report)
    assert by_step["cell 1"]["status"] == "same"  # it only kept the answers
    printed = by_step["cell 2"]
    assert printed["differs_in"] == ["stdout"]
    assert any(line.startswith("+") and "a different summary" in line for line in printed["diffs"]["stdout"])
    assert any(line.startswith("-") and "summary of part: chapter two" in line for line in printed["diffs"]["stdout"])

    capsys.readouterr()
    assert main([str(trace), "--root", str(data_dir)]) == 1
    text = capsys.readouterr().out
    assert "cell 2: differs in stdout" in text and "cell 3: same" in text


def test_code_that_asks_something_new_is_counted_as_not_recorded(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = record(tmp_path, data_dir, monkeypatch)
    asked = "\nprint(llm_query('a question the session never asked'))"

    def change(event: dict[str, Any]) -> None:
        if event["type"] == "tool" and "print(notes)" in str(event["arguments"].get("code")):
            event["arguments"]["code"] += asked
        if event["type"] == "cell" and "print(notes)" in event["code"]:
            event["code"] += asked

    edit(trace, change)
    exit_code, report = replay(trace, data_dir, capsys)
    assert exit_code == 1 and report["not_recorded"] == 1
    second = steps(report)["cell 2"]
    assert second["not_recorded"] == 1 and second["sub_calls"] == {"recorded": 2, "replayed": 3}
    assert "not in the recording" in "\n".join(second["diffs"]["error"])  # llm_query raised it, uncaught


def test_a_cell_longer_than_the_old_text_limit_replays(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    source = "# " + "padding " * 600 + "\nprint(llm_query('short question'))"
    assert len(source) > TEXT_LIMIT
    trace = record(tmp_path, data_dir, monkeypatch, cells=[source])
    (cell,) = [event for event in events_of(trace) if event["type"] == "cell"]
    assert cell["code"] == source  # the trace keeps a cell's code whole
    assert replay(trace, data_dir, capsys)[0] == 0

    def cut(event: dict[str, Any]) -> None:  # a call whose arguments were shortened: the cell's code is used
        if event["type"] == "tool" and event["name"] == "run_code":
            event["arguments"]["code"] = shorten(event["arguments"]["code"])

    edit(trace, cut)
    exit_code, report = replay(trace, data_dir, capsys)
    assert exit_code == 0 and steps(report)["cell 1"]["status"] == "same"


def test_a_child_rlm_replays_from_its_recorded_turns(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = ScriptedRoot(
        {"How many lines": [code("print(len(context.splitlines()))"), lambda told: f"{told.splitlines()[0]} lines"]},
        sub_answer=fake_answer,
    )
    cell = "r = rlm_query('How many lines?', book)\nprint(r, r.stopped)"
    trace = record(tmp_path, data_dir, monkeypatch, cells=[cell], answer=root)
    turns = [event for event in events_of(trace) if event["type"] == "root_call"]
    assert len(turns) == 2 and turns[0]["reply"]["calls"][0]["name"] == "run_code"
    exit_code, report = replay(trace, data_dir, capsys)
    assert exit_code == 0, report
    assert steps(report)["cell 1"]["status"] == "same"

    def forget(event: dict[str, Any]) -> None:
        event.pop("reply", None)

    (data_dir / "book.txt").write_text(BOOK + "chapter four\n")  # the child now reads other data
    exit_code, report = replay(trace, data_dir, capsys)
    assert exit_code == 1 and steps(report)["cell 1"]["status"] == "differs" and report["not_recorded"] >= 1
    (data_dir / "book.txt").write_text(BOOK)

    edit(trace, forget)
    exit_code, report = replay(trace, data_dir, capsys)
    assert exit_code == 1 and report["not_recorded"] >= 1


def test_answers_from_the_sessions_own_cache_are_not_served_twice(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cell = "print(llm_query('P'), llm_query('P'), llm_query('P', model='claude-other'))"
    trace = record(tmp_path, data_dir, monkeypatch, cells=[cell], answer=lambda p, s, model: f"{p} by {model}")
    cached = [event for event in events_of(trace) if event.get("cached")]
    assert [event.get("cache") for event in cached] == ["session"]  # the second 'P' came from the cache
    exit_code, report = replay(trace, data_dir, capsys)
    assert exit_code == 0, report  # the third call gets its own answer, not the second's


def test_a_refused_call_does_not_shift_the_steps_after_it(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = record(tmp_path, data_dir, monkeypatch, cells=["print('A')", "print('B')", "print('C')"])

    def forge(event: dict[str, Any]) -> None:  # a timeout the tool's schema refuses before the session
        if event["type"] == "tool" and "print('A')" in str(event.get("arguments")):
            event["arguments"]["timeout_s"] = 10**400  # an int no float can hold

    edit(trace, forge)
    exit_code, report = replay(trace, data_dir, capsys)
    assert exit_code == 1
    by_step = steps(report)
    assert by_step["cell 1"]["status"] == "not replayed" and "refused" in by_step["cell 1"]["why"]
    assert by_step["cell 2"]["status"] == by_step["cell 3"]["status"] == "same"


def test_a_save_trace_path_that_cannot_be_written_is_said_before_replaying(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = record(tmp_path, data_dir, monkeypatch, cells=["print(1)"])
    capsys.readouterr()
    assert main([str(trace), "--root", str(data_dir), "--save-trace", str(tmp_path / "no" / "such" / "t.jsonl")]) == 2
    assert "cannot write --save-trace" in capsys.readouterr().err
    kept = tmp_path / "replayed.jsonl"
    assert main([str(trace), "--root", str(data_dir), "--save-trace", str(kept)]) == 0
    assert [event["type"] for event in events_of(kept)].count("cell") == 1


def test_a_forged_or_garbage_trace_is_refused_clearly(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.jsonl"
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(os.urandom(4096))
    not_events = tmp_path / "other.jsonl"
    not_events.write_text('{"hello": "world"}\n[1, 2, 3]\n' + "[" * 100_000 + "\n")
    forged = tmp_path / "forged.jsonl"
    forged.write_text(
        json.dumps({"v": 1, "id": "one", "parent": None, "type": "tool", "name": "run_code"})
        + "\n"
        + json.dumps({"v": 1, "id": 2, "parent": None, "type": "cell", "name": "cell 1\x1b[31m"})
        + "\n"
    )
    escapes = tmp_path / "escapes.jsonl"
    escapes.write_text(json.dumps({"v": 1, "id": 1, "parent": None, "type": "tool", "name": "\x1b]0;PWN\x07"}) + "\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(forged)
    for path, said in [
        (missing, "no such trace"),
        (garbage, "holds no rlm-mcp trace events"),
        (not_events, "holds no rlm-mcp trace events"),
        (forged, "no top-level tool calls"),
        (escapes, "nothing in the trace can be replayed"),
        (link, "symbolic link"),
        (tmp_path, "not a regular file"),
    ]:
        capsys.readouterr()
        assert main([str(path), "--root", str(data_dir)]) == 2, path
        captured = capsys.readouterr()
        assert said in captured.err and captured.out == "", (path, captured.err)
        assert "\x1b" not in captured.err
