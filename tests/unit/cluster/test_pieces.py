"""A task's reading of its locked-down child: the answer line and the sandbox report are the model's to forge.

The child's answer file is written by a process that ran the model's function, so pieces._parsed takes only
the value (or the error) from it, bounded; the missing lockdown layers come from the report pipe alone, and a
note only in the one shape the child writes.
"""

from __future__ import annotations

import json

import pytest

from rlm_mcp.cluster import pieces
from rlm_mcp.errors import MapFailure

URL = "s3://bucket/object.txt"


def test_a_value_is_taken_with_the_reports_gaps_and_nothing_else_of_the_line() -> None:
    line = json.dumps({"value": {"n": 3}, "gaps": ["forged: none missing"], "extra": "x" * 100}).encode()
    assert pieces._parsed(line, URL, ["seccomp"]) == {"value": {"n": 3}, "gaps": ["seccomp"]}


def test_a_note_is_kept_only_in_the_shape_the_child_writes() -> None:
    honest = "not JSON (set): kept as its repr"
    kept = pieces._parsed(json.dumps({"value": "{1}", "note": honest}).encode(), URL, [])
    assert kept["note"] == honest
    forged = pieces._parsed(json.dumps({"value": 1, "note": "sandbox: all layers applied"}).encode(), URL, [])
    assert "note" not in forged


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        (b"", "answered no result"),  # the child was killed before it wrote
        (b'{"value": 1', "answered no result"),  # a line cut short
        (b"[1, 2]", "answered no result"),  # JSON, not an object
        (b'{"gaps": []}', "answered no value"),
    ],
)
def test_a_line_that_is_not_an_answer_is_the_objects_error(answer: bytes, said: str) -> None:
    with pytest.raises(MapFailure, match=said):
        pieces._parsed(answer, URL, [])


def test_the_functions_error_is_passed_on_bounded() -> None:
    with pytest.raises(MapFailure) as caught:
        pieces._parsed(json.dumps({"error": "E" * 10_000}).encode(), URL, [])
    assert str(caught.value) == "E" * pieces.MAX_ERROR_CHARS


def test_an_oversized_value_is_refused_however_it_is_spelled() -> None:
    big = json.dumps({"value": "v" * (pieces.MAX_RESULT_CHARS + 1)}).encode()  # a line just over the value's cap
    with pytest.raises(MapFailure, match="characters as JSON; return less"):
        pieces._parsed(big, URL, [])
    huge = b'{"value": "' + b"v" * (pieces.MAX_RESULT_CHARS + 20_000) + b'"}'  # refused before it is parsed
    with pytest.raises(MapFailure, match="characters as JSON; return less"):
        pieces._parsed(huge, URL, [])


def test_the_report_gives_the_gaps_bounded_in_number_and_length() -> None:
    report = json.dumps({"gaps": ["g" * 5_000] * (pieces.MAX_GAPS + 5)}).encode()
    gaps = pieces._gaps(report, URL)
    assert len(gaps) == pieces.MAX_GAPS and all(gap == "g" * pieces.MAX_ERROR_CHARS for gap in gaps)


def test_a_report_without_gaps_means_the_child_never_locked_down() -> None:
    for report in (b"", b"not json", b'{"gaps": "none"}', b"[]"):
        with pytest.raises(MapFailure, match="before it locked itself down"):
            pieces._gaps(report, URL)
    with pytest.raises(MapFailure, match="strict mode: landlock is missing"):
        pieces._gaps(json.dumps({"error": "strict mode: landlock is missing"}).encode(), URL)


def test_left_out_names_the_budget_and_what_to_do() -> None:
    assert pieces.left_out("llm", 1_000) == (
        "left out: the map's prompts passed 1,000 bytes in all; map fewer or smaller objects"
    )
    assert pieces.left_out("function", 2_000).endswith("passed 2,000 bytes in all; return less per object")
