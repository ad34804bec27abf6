"""A trace read for replay as hostile input: a forged, repeated or cut-short line is skipped and counted, a
file that is not a trace is refused in one line that says what to name instead, and a forged tree ends."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from rlm_mcp.errors import TraceError
from rlm_mcp.replay import record
from rlm_mcp.trace import SCHEMA_VERSION, shorten

V = SCHEMA_VERSION


def event(event_id: Any, parent: Any = None, kind: Any = "tool", **fields: Any) -> dict[str, Any]:
    return {"v": V, "id": event_id, "parent": parent, "type": kind, **fields}


def write(path: Path, *lines: dict[str, Any] | str | bytes) -> Path:
    with open(path, "wb") as handle:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line) + "\n"
            handle.write(line.encode() if isinstance(line, str) else line)
    return path


RUN = event(1, name="run_code", arguments={"code": "x = 1"})


def test_lines_that_are_not_events_are_skipped_and_counted(tmp_path: Path) -> None:
    trace = write(
        tmp_path / "trace.jsonl",
        RUN,
        "not json\n",
        "[1, 2]\n",
        event(True),  # a bool is not an id
        event("2"),
        event(3, parent="1"),
        event(4, kind="shell"),
        event(1, name="load_context"),  # a second event 1: the first stands
        {**event(5), "v": 0},
        "\n",
        event(6, parent=1, kind="cell", code="x = 1", secret_field="dropped"),
        '{"v": 1, "id": 7, "parent": 1, "type": "cell", "code": "cut sh',  # the crash cut the last line
    )
    events, skipped = record.read_events(trace)
    assert [item["id"] for item in events] == [1, 6] and events[0]["name"] == "run_code"
    assert skipped == 9
    assert "secret_field" not in events[1] and set(events[1]) <= set(record.KEPT)


def test_a_line_over_the_line_cap_is_skipped_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "MAX_LINE_BYTES", 1_000)
    long_line = json.dumps(event(2, name="run_code", arguments={"code": "y" * 5_000})) + "\n"
    events, skipped = record.read_events(write(tmp_path / "trace.jsonl", long_line, RUN))
    assert [item["id"] for item in events] == [1] and skipped == 1


def test_a_trace_of_a_newer_schema_says_to_upgrade(tmp_path: Path) -> None:
    trace = write(tmp_path / "trace.jsonl", {**RUN, "v": V + 1})
    with pytest.raises(TraceError, match=rf"newer rlm-mcp \(schema v{V + 1}\); upgrade to replay it"):
        record.read_events(trace)


@pytest.mark.parametrize("content", [b"", b"garbage\n", b'{"id": 1}\n', b"\xff\xfe\x00\n"])
def test_a_file_without_events_is_refused_clearly(tmp_path: Path, content: bytes) -> None:
    with pytest.raises(TraceError, match="holds no rlm-mcp trace events"):
        record.read_events(write(tmp_path / "trace.jsonl", content))


def test_a_link_a_directory_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    target = write(tmp_path / "real.jsonl", RUN)
    link = tmp_path / "link.jsonl"
    os.symlink(target, link)
    with pytest.raises(TraceError, match="is a symbolic link; name the trace file itself"):
        record.read_events(link)
    with pytest.raises(TraceError, match=r"is not a regular file \(a trace is a .jsonl file\)"):
        record.read_events(tmp_path)
    with pytest.raises(TraceError, match=r"^no such trace: "):
        record.read_events(tmp_path / "absent.jsonl")


def test_a_forged_cycle_or_a_deep_chain_ends(tmp_path: Path) -> None:
    cycle = [event(1, parent=2), event(2, parent=1)]
    assert [item["id"] for item in record.Tree(cycle).below(cycle[0])] == [2]
    chain = [event(0), *(event(n, parent=n - 1) for n in range(1, 200))]
    assert len(record.Tree(chain).below(chain[0])) == record.MAX_DEPTH


def test_load_refuses_a_trace_with_nothing_to_replay(tmp_path: Path) -> None:
    only_a_child = write(tmp_path / "a.jsonl", event(1, kind="rlm"))
    with pytest.raises(TraceError, match="holds no top-level tool calls to replay"):
        record.load(only_a_child)
    unknown_tool = write(tmp_path / "b.jsonl", event(1, name="rm_rf", arguments={}))
    with pytest.raises(TraceError, match=r"^nothing in the trace can be replayed: rm_rf is not a tool replay knows"):
        record.load(unknown_tool)


def test_steps_say_why_one_is_not_reissued(tmp_path: Path) -> None:
    trace = write(
        tmp_path / "trace.jsonl",
        RUN,
        event(2, name="run_code", arguments={"interrupt": True}),
        event(3, name="run_code", arguments={}),
        event(4, name="sub_query", arguments={"prompt": "p" * 10 + "... [9 more characters]"}),
        event(5, name="load_context", arguments={"path": "/d"}, texts_dropped=["arguments"]),
        event(6, name="sub_query", arguments={"prompt": shorten("q" * 5_000)}),
        "not an event\n",
    )
    recording = record.load(trace)
    steps = recording.steps
    assert [step.skip == "" for step in steps] == [True, False, True, True, False, False]
    assert "interrupt=True" in steps[1].skip and steps[2].wait
    assert steps[3].skip == ""  # 10 characters: not the tracer's cut, which is at its limits only
    assert "kept none of this call's arguments" in steps[4].skip
    assert steps[5].skip == "its `prompt` was too long for the trace and was shortened"
    assert recording.notes == ["1 lines of the trace are not events and were skipped"]
    assert record.code_of(steps[0]) == "x = 1"
