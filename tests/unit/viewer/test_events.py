"""A trace's lines rebuilt into the page's events as hostile input: ids the page's script holds exactly and
parents that come first (so no forged cycle), numbers that are finite, texts that are text and bounded, and
a list of problems that stays short however many lines are bad."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlm_mcp.viewer import events as ev


def cleaned(**raw: Any) -> tuple[ev.Event | None, str | None]:
    return ev.clean_event(raw)


@pytest.mark.parametrize("bad_id", [None, "1", 1.0, True, 2**53, -(2**53), [1]])
def test_an_id_the_page_cannot_hold_exactly_is_skipped(bad_id: Any) -> None:
    event, problem = cleaned(id=bad_id, type="tool")
    assert event is None and problem is not None and problem.startswith("id is not an integer of at most 2**53")


def test_the_largest_safe_id_is_kept() -> None:
    event, problem = cleaned(id=ev.MAX_SAFE_INTEGER, parent=ev.MAX_SAFE_INTEGER - 1, type="cell")
    assert problem is None and event == {"id": ev.MAX_SAFE_INTEGER, "parent": ev.MAX_SAFE_INTEGER - 1, "type": "cell"}


@pytest.mark.parametrize("parent", [5, 6, "4", True, 4.0])
def test_a_parent_that_is_not_an_earlier_id_puts_the_event_at_the_top(parent: Any) -> None:
    event, problem = cleaned(id=5, parent=parent, type="cell")
    assert event is not None and "parent" not in event
    assert problem == "event 5: parent is not an earlier event's id; shown at the top"


def test_not_an_object_is_skipped() -> None:
    assert ev.clean_event([1, 2]) == (None, "not a JSON object (list)")


def test_an_unknown_type_becomes_a_generic_event_that_shows_it_as_text() -> None:
    event, _ = cleaned(id=1, type="<b>shell</b>\n" + "t" * 500)
    assert event is not None and event["type"] == "event"
    assert event["unknown_type"].startswith("<b>shell</b>\\n") and len(event["unknown_type"]) < ev.NAME_LIMIT + 40


def test_only_finite_numbers_and_plausible_start_times_are_kept() -> None:
    event, _ = cleaned(
        id=1, type="sub_call", elapsed_s=float("nan"), cost_usd=float("inf"), input_tokens="9", output_tokens=True,
        attempts=2, latency_s=0.5, started=ev.LATEST_START + 1, level=2**60,
    )  # fmt: skip
    assert event == {"id": 1, "type": "sub_call", "attempts": 2, "latency_s": 0.5}
    assert cleaned(id=1, type="tool", started=-1.0)[0] == {"id": 1, "type": "tool"}
    assert cleaned(id=1, type="tool", started=1.7e9)[0] == {"id": 1, "type": "tool", "started": 1.7e9}


def test_names_are_one_bounded_line_and_texts_are_bounded() -> None:
    event, _ = cleaned(id=1, type="sub_call", model="m\u202e\n" + "x" * 1_000, answer="a" * (ev.TEXT_LIMIT + 10))
    assert event is not None
    assert event["model"].startswith("m\\u202e\\n") and "\n" not in event["model"]
    assert len(event["model"]) <= ev.NAME_LIMIT + len("... [1,000 more characters]")
    assert event["answer"] == "a" * ev.TEXT_LIMIT + "... [10 more characters]"


def test_a_run_code_calls_code_is_kept_apart_from_its_arguments() -> None:
    event, _ = cleaned(id=1, type="tool", name="run_code", arguments={"code": "print(1)\nx = 2", "timeout_s": 5})
    assert event is not None and event["code"] == "print(1)\nx = 2" and event["label"] == "print(1)"
    assert json.loads(event["arguments"]) == {"timeout_s": 5}


def test_a_non_text_field_is_shown_as_json_and_empty_fields_are_left_out() -> None:
    event, _ = cleaned(id=1, type="cell", stdout={"a": [1]}, stderr="", result=[], error=None, cached=True)
    assert event == {"id": 1, "type": "cell", "stdout": '{\n "a": [\n  1\n ]\n}', "cached": True}


def test_the_reader_lists_problems_up_to_its_bound_and_counts_the_rest() -> None:
    bad = [b"not json"] * (ev.LISTED_PROBLEMS + 25)
    reader = ev.TraceReader()
    assert reader.read_lines([*bad, None, b"   "]) == []
    assert reader.problem_count == ev.LISTED_PROBLEMS + 26 and len(reader.problems) == ev.LISTED_PROBLEMS
    assert reader.problems[0] == "line 1: not JSON; skipped" and reader.line == ev.LISTED_PROBLEMS + 27


def test_the_reader_skips_a_repeated_id_and_numbers_lines_on_from_where_it_was() -> None:
    reader = ev.TraceReader()
    first = reader.read_lines([json.dumps({"id": 1, "type": "tool"}).encode()])
    again = reader.read_lines([b"", json.dumps({"id": 1, "type": "cell"}).encode(), None])
    assert [item["type"] for item in first] == ["tool"] and again == []
    assert reader.problems == [
        "line 3: id 1 repeated; skipped",
        f"line 4: longer than {ev.MAX_LINE_BYTES:,} bytes; skipped",
    ]


def test_a_whole_trace_cut_short_by_a_crash_shows_what_came_before(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    trace.write_bytes(
        json.dumps({"id": 1, "type": "tool", "name": "run_code"}).encode()
        + b"\n\xff\xfe not json\n"
        + json.dumps({"id": 2, "parent": 1, "type": "cell", "stdout": "ok"}).encode()
        + b'\n{"id": 3, "type": "cell", "stdout": "cut'
    )
    events, reader = ev.load_events(trace)
    assert [item["id"] for item in events] == [1, 2] and events[1]["parent"] == 1
    assert reader.problems == ["line 2: not JSON; skipped", "line 4: not JSON; skipped"]
    with pytest.raises(FileNotFoundError):
        ev.load_events(tmp_path / "absent.jsonl")
