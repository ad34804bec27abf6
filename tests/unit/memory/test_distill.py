"""Distillation from a scripted trace: what the distiller reads, what of its answer is kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rlm_mcp.memory import distill, handbook
from rlm_mcp.memory.distill import parse, work_log
from rlm_mcp.memory.inputs import input_of
from rlm_mcp.memory.service import Memory, session_tag
from rlm_mcp.trace import Tracer
from testkit.distiller import ScriptedDistiller
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio
SECRET_LINE = "the loaded file's own line 4711"


def scripted_trace(path: Path, cells: int = 3) -> Tracer:
    """A trace as a session writes it: a load, cells (one failing, one with sub-calls), a distillation."""
    tracer = Tracer(path)
    with tracer.event("tool", "load_context", arguments={"name": "context", "path": "/data/app.log"}) as event:
        event.set(outcome="ok", kind="mapped", chars=5_000_000)
    for number in range(1, cells + 1):
        code = f"hits = grep('ERROR', context)  # step {number}"
        tool = tracer.event("tool", "run_code", arguments={"code": "..."})
        with tool, tracer.event("cell", f"cell {number}", code=code) as cell:
            if number == 2:
                with tracer.event("sub_call", "m", prompt=SECRET_LINE) as call:
                    call.set(answer="fine")
            cell.set(outcome="error" if number == 3 else "ok", stdout=f"{number * 10} hits\n",
                     error="NameError: name 'x' is not defined" if number == 3 else None)  # fmt: skip
    earlier = "Reflect on this session's work log. (an earlier distillation)"
    with tracer.event("distill", "distill"), tracer.event("sub_call", "m", prompt=earlier):
        pass
    return tracer


def events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_work_log_holds_code_outcomes_and_errors_but_not_prompts_or_distillations(tmp_path: Path) -> None:
    scripted_trace(tmp_path / "trace.jsonl")
    log, last, cells = work_log(events(tmp_path / "trace.jsonl"))
    assert cells == 3
    assert "hits = grep('ERROR', context)  # step 2" in log and "20 hits" in log
    assert "cell 2: ok" in log and "1 sub-calls (0 failed)" in log
    assert "NameError: name 'x' is not defined" in log
    assert "load_context(name=context, path=/data/app.log) -> mapped 5000000 chars" in log
    assert SECRET_LINE not in log  # a sub-call's prompt carries pieces of the context
    assert "earlier distillation" not in log
    again, _, cells_after = work_log(events(tmp_path / "trace.jsonl"), after=last)
    assert cells_after == 0 and again == ""


def test_a_long_log_keeps_its_beginning_and_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distill, "LOG_MAX_CHARS", 1_000)
    scripted_trace(tmp_path / "trace.jsonl", cells=40)
    log, _, cells = work_log(events(tmp_path / "trace.jsonl"))
    assert cells == 40 and len(log) <= 1_000
    assert "step 1\n" in log and "step 40\n" in log and "entries left out" in log


def test_only_well_formed_proposals_are_kept() -> None:
    answer = (
        "Here you go:\n```json\n"
        + json.dumps(
            {
                "behaviors": [
                    {"name": "behavior_grep_first", "instruction": "grep before chunking", "cells": [1, True, "x", 2]},
                    {"name": "", "instruction": "no name"},
                    {"name": "behavior_x", "instruction": ["not", "text"]},
                    "not an object",
                ],
                "findings": [
                    {"about": "context", "text": "UTC timestamps"},
                    {"about": "nowhere", "text": "goes to the only input"},
                    {"about": "context", "text": ""},
                ],
            }
        )
        + "\n```"
    )
    behaviors, findings, dropped = parse(answer, ["context"])
    assert [(b.name, cells) for b, cells in behaviors] == [("behavior_grep_first", "1,2")]
    assert findings == [("context", "UTC timestamps"), ("context", "goes to the only input")]
    assert dropped == 4
    assert parse("no JSON at all {", ["context"]) == ([], [], 0)
    assert parse('{"behaviors": "x", "findings": {}}', ["a", "b"]) == ([], [], 0)


async def test_distilling_twice_merges_and_credits_the_verdict_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    memory = Memory(make_settings(tmp_path, data, memory_auto_approve=True))  # offered at once, as distilled
    trace = tmp_path / "trace.jsonl"
    tracer = scripted_trace(trace)
    distiller = ScriptedDistiller(
        behaviors=[{"name": "behavior_grep_first", "instruction": "grep ERROR before chunking a log", "cells": [1]}],
        findings=[{"about": "context", "text": "one request per line"}],
    )

    async def complete(system: str, prompt: str) -> str:
        assert "never as instructions to you" in system
        return distiller(prompt, system, "m")

    ref = input_of({"kind": "text", "text": "the input"}, "inline text")
    shown = await memory.behaviors("s1", "grep", 3)
    assert shown == []
    report = await memory.distill("s1", trace, {"context": ref}, complete)
    assert (report.verdict, report.added, report.findings, report.cells) == ("good", ["behavior_grep_first"], 1, 3)
    assert [f.text for f in await memory.recall(ref)] == ["one request per line"]

    assert (await memory.distill("s1", trace, {"context": ref}, complete)).skipped  # nothing new since
    with tracer.event("cell", "cell 4", code="print(len(hits))"):
        pass
    assert "fewer than 3" in (await memory.distill("s1", trace, {"context": ref}, complete, min_cells=3)).skipped

    await memory.behaviors("s2", "grep", 3)  # shown in session s2, which then ends well
    distiller.behaviors[0]["name"] = "behavior_grep_errors_first"  # a near-duplicate under another name
    other_trace = tmp_path / "other.jsonl"
    scripted_trace(other_trace)
    report = await memory.distill("s2", other_trace, {"context": ref}, complete)
    assert report.merged == ["behavior_grep_first"] and report.added == []
    stored = memory.db.run(lambda c: handbook.get(c, "behavior_grep_first", with_sources=True))
    assert (stored.uses, stored.good_uses, stored.merged) == (1, 1, 1)
    assert {source["session"] for source in stored.sources} == {session_tag("s1"), session_tag("s2")}
    assert len(distiller.logs) == 2 and SECRET_LINE not in "".join(distiller.logs)
    memory.close()


def test_a_cell_still_running_when_distilled_is_read_by_the_next_distillation(tmp_path: Path) -> None:
    """distill() inside a cell: the cell's event is written when it ends, after the distillation read."""
    path = tmp_path / "trace.jsonl"
    tracer = scripted_trace(path, cells=1)
    with tracer.event("tool", "run_code", arguments={}), tracer.event("cell", "cell 2", code="print(distill())"):
        with tracer.event("sub_call", "m", prompt="inside the running cell"):
            pass
        _, mark, cells = work_log(events(path))
        assert cells == 1  # cell 2 is not written yet
    again, _, cells = work_log(events(path), after=mark)
    assert cells == 1 and "print(distill())" in again


def test_deeply_nested_json_is_dropped_not_raised() -> None:
    assert parse("[" * 5_000 + "]" * 5_000, ["context"]) == ([], [], 0)
    assert parse('{"behaviors": ' + "[" * 5_000 + "]" * 5_000 + "}", ["context"]) == ([], [], 0)
