"""The server's side of a map, holding the Ray driver's frames as hostile input. No Ray: where a driver is
needed, a small Python process in its place sends the frames a broken or hijacked driver could send, down
the same pipes RayCluster reads (maps.DRIVER is the one program it starts)."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from rlm_mcp.bridge import frames, ops
from rlm_mcp.cluster import maps, pieces
from rlm_mcp.errors import MapRefused

ADDRESS = "ray://stand-in"  # no port: reachable() does not try to connect


# -- checked_result: one task's result, as the driver forwarded it --------------------------------------------


@pytest.mark.parametrize("result", [None, [], "ok", {"ok": 1, "value": 2}, {"value": 2}])
def test_a_result_without_a_boolean_ok_is_that_objects_error(result: Any) -> None:
    assert maps.checked_result("function", result) == {
        "ok": False,
        "error": "the task answered something other than its fields",
    }


def test_a_failed_tasks_error_is_one_bounded_printable_line() -> None:
    checked = maps.checked_result("function", {"ok": False, "error": "bad\n\x1b[31m" + "e" * 5_000, "x": 1})
    assert set(checked) == {"ok", "error"} and "\n" not in checked["error"] and "\x1b" not in checked["error"]
    assert len(checked["error"]) < maps.MAX_ERROR_CHARS + 40
    assert maps.checked_result("llm", {"ok": False, "error": 42}) == {"ok": False, "error": "the task failed"}


def test_a_function_value_over_its_cap_or_missing_is_refused() -> None:
    over = {"ok": True, "value": "v" * pieces.MAX_RESULT_CHARS, "gaps": []}  # its JSON adds two quotes
    assert maps.checked_result("function", over)["ok"] is False
    assert maps.checked_result("function", {"ok": True, "gaps": []})["ok"] is False
    fits = {"ok": True, "value": "v" * (pieces.MAX_RESULT_CHARS - 2), "gaps": []}
    assert maps.checked_result("function", fits)["ok"] is True


def test_only_the_fields_a_map_uses_are_kept_and_bad_gaps_are_dropped() -> None:
    checked = maps.checked_result(
        "function", {"ok": True, "value": [1, 2], "gaps": ["seccomp", 7], "path": "file:///etc/passwd", "x": 1}
    )
    assert checked == {"ok": True, "value": [1, 2], "gaps": []}
    many = maps.checked_result("function", {"ok": True, "value": 1, "gaps": ["g"] * (pieces.MAX_GAPS + 1)})
    assert many["gaps"] == []
    noted = maps.checked_result("function", {"ok": True, "value": 1, "gaps": ["a\nb"], "note": "n" * 1_000})
    assert noted["gaps"] == ["a\\nb"] and len(noted["note"]) < 250


def test_an_llm_maps_prompt_must_be_text_within_its_cap() -> None:
    assert maps.checked_result("llm", {"ok": True, "prompt": "p", "value": 1}) == {"ok": True, "prompt": "p"}
    assert maps.checked_result("llm", {"ok": True, "prompt": ["p"]})["ok"] is False
    assert maps.checked_result("llm", {"ok": True, "prompt": "p" * (pieces.MAX_PROMPT_CHARS + 1)})["ok"] is False


def test_the_bounds_an_honest_driver_fits_in() -> None:
    assert maps.reply_budget("llm") == maps.MAX_PROMPTS_BYTES and maps.reply_budget("function") == maps.MAX_REPLY_CHARS
    assert maps.largest_frame("function") == pieces.MAX_RESULT_CHARS + maps.FRAME_SLACK
    assert maps.largest_frame("llm") == 6 * pieces.MAX_PROMPT_CHARS + maps.FRAME_SLACK
    assert maps.driver_bytes("function", 10) == maps.MAX_REPLY_CHARS + 10 * maps.PER_OBJECT_BYTES + maps.FRAME_SLACK


def test_held_estimate_counts_what_json_containers_cost_once_parsed() -> None:
    flat = b'"' + b"x" * 1_000 + b'"'
    nested = json.dumps([[1]] * 200).encode()
    assert maps.held_estimate(flat) == len(flat)
    assert maps.held_estimate(nested) == len(nested) + maps.HELD_PER_ITEM * (201 + 199)


def test_results_past_the_reply_size_are_left_out_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    results = [{"path": f"u{i}", "ok": True, "value": "v" * 50} for i in range(3)]
    monkeypatch.setattr(maps, "MAX_REPLY_CHARS", 2 * len(json.dumps(results[0])))  # two of them fit
    bounded = maps._bounded(results)
    assert [item["ok"] for item in bounded] == [True, True, False]
    assert bounded[2]["path"] == "u2" and f"passed {maps.MAX_REPLY_CHARS:,} characters" in bounded[2]["error"]


def test_the_drivers_environment_holds_no_secret() -> None:
    environ = {"PATH": "/usr/bin", "HOME": "/home/u", "OPENAI_API_KEY": "sk-1", "RAY_ADDRESS": "h:1", "AWS_SECRET": "s"}
    env = maps.driver_environment(environ)
    assert "OPENAI_API_KEY" not in env and "AWS_SECRET" not in env
    assert env["RAY_ADDRESS"] == "h:1" and env["PATH"] == "/usr/bin"


# -- a driver stand-in that breaks the protocol ---------------------------------------------------------------

STAND_IN = """\
import sys
sys.path.insert(0, sys.argv[1])
from rlm_mcp.bridge import frames
frames.read_frame(sys.stdin.buffer)  # the map it was sent
with open({path!r}, "rb") as sent:
    sys.stdout.buffer.write(sent.read())
sys.stdout.buffer.flush()
sys.stdin.buffer.read()  # until the server closes its pipe or kills it
"""


def stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *sent: dict[str, Any] | bytes) -> None:
    """The driver RayCluster starts: sends `sent` (frames, or raw bytes as they are) once it has the map."""
    data = tmp_path / "driver-sends"
    data.write_bytes(b"".join(item if isinstance(item, bytes) else frames.encode(item) for item in sent))
    monkeypatch.setattr(maps, "DRIVER", STAND_IN.format(path=str(data)))


def result(index: Any, value: Any = "v") -> dict[str, Any]:
    return {"op": ops.RESULT, "index": index, "result": {"ok": True, "value": value, "gaps": []}}


DONE = {"op": ops.DONE}


async def run_map(urls: int = 2, kind: str = "function") -> list[dict[str, Any]]:
    cluster = maps.RayCluster(ADDRESS)
    try:
        return await cluster.run(kind, [f"s3://b/{i}" for i in range(urls)], [], None, time.monotonic() + 30)
    finally:
        await cluster.stop()


@pytest.mark.anyio
async def test_an_honest_stand_in_gets_its_results_in_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    failed = {"op": ops.RESULT, "index": 0, "result": {"ok": False, "error": "no such key"}}
    stand_in(monkeypatch, tmp_path, result(1, {"n": 1}), failed, DONE)
    assert await run_map() == [{"ok": False, "error": "no such key"}, {"ok": True, "value": {"n": 1}, "gaps": []}]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "frame",
    [result(2), result(-1), result(True), result("0"), result(None), {"op": "log", "index": 0}],
    ids=["past-the-end", "negative", "bool", "text", "none", "unknown-op"],
)
async def test_a_frame_for_no_object_of_the_map_fails_the_map(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, frame: dict[str, Any]
) -> None:
    stand_in(monkeypatch, tmp_path, frame, DONE)
    with pytest.raises(MapRefused, match=r"^the Ray driver sent a malformed frame: this map failed"):
        await run_map()


@pytest.mark.anyio
async def test_a_second_result_for_one_object_fails_the_map(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stand_in(monkeypatch, tmp_path, result(0, "first"), result(0, "forged"), result(1), DONE)
    with pytest.raises(MapRefused, match="malformed frame"):
        await run_map()


@pytest.mark.anyio
async def test_a_frame_announcing_more_than_a_result_is_refused_before_it_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    largest = maps.largest_frame("function")
    stand_in(monkeypatch, tmp_path, struct.pack(">I", largest + 1))  # a header only: its bytes never need to come
    with pytest.raises(MapRefused, match=f"sent a {largest + 1:,}-byte frame"):
        await run_map()


@pytest.mark.anyio
async def test_a_frame_that_is_not_json_fails_the_map(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stand_in(monkeypatch, tmp_path, struct.pack(">I", 5) + b"{oops")
    with pytest.raises(MapRefused, match="not valid JSON"):
        await run_map()


@pytest.mark.anyio
async def test_results_past_the_reply_budget_are_errors_that_say_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    budget = 2 * (len(frames.encode(result(0, "v" * 100))) - frames.HEADER.size)  # two results' frames exactly
    monkeypatch.setattr(maps, "MAX_REPLY_CHARS", budget)
    stand_in(monkeypatch, tmp_path, *(result(i, "v" * 100) for i in range(3)), DONE)
    results = await run_map(3)
    assert [item["ok"] for item in results] == [True, True, False]
    assert results[2]["error"] == pieces.left_out("function", budget)


@pytest.mark.anyio
async def test_an_oversized_or_forged_result_is_that_objects_error_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    forged = {"op": ops.RESULT, "index": 0, "result": {"ok": "yes", "value": 1}}
    stand_in(monkeypatch, tmp_path, forged, result(1, "w" * pieces.MAX_RESULT_CHARS), result(2, 3), DONE)
    results = await run_map(3)
    assert [item["ok"] for item in results] == [False, False, True]
    assert results[0]["error"] == results[1]["error"] == "the task answered something other than its fields"


@pytest.mark.anyio
async def test_a_driver_that_exits_mid_map_fails_it_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maps, "DRIVER", "import sys; sys.stdin.buffer.read(4); sys.exit(3)")
    with pytest.raises(
        MapRefused, match=r"^the Ray driver exited: this map failed; the next one starts a new connection$"
    ):
        await run_map()


@pytest.mark.anyio
async def test_the_drivers_own_error_is_passed_on_printable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    stand_in(monkeypatch, tmp_path, {"op": ops.DONE, "error": "cancelled\x1b[2J at the time limit"})
    with pytest.raises(MapRefused) as caught:
        await run_map()
    assert str(caught.value) == "cancelled\\x1b[2J at the time limit"
