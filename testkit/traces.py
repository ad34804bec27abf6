"""Synthetic traces of any size, in the tracer's schema, for the viewer's tests and benchmark.

The shape of a big real session: a load, then a run_code call whose cell fans `sub_calls` sub-calls out
`concurrency` at a time (so their bars overlap), one of which fails and one of which holds `needle` in its
answer, then a cell that runs a child RLM with sub-calls of its own, then a cell that fails. Written the way
the tracer writes (an event's line when it finishes, so children come before their parents).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

START = 1_780_000_000.0


@dataclass(frozen=True)
class Synthetic:
    path: Path
    events: int
    fan_cell: int  # the id of the cell with the big batch
    failed_sub_call: int
    needle_sub_call: int
    child_rlm: int
    failing_cell: int


def event(id_: int, parent: int | None, type_: str, name: str, started: float, elapsed: float, **fields: object) -> str:
    line = {"v": 1, "id": id_, "parent": parent, "depth": 0, "type": type_, "name": name, "started": started}
    line.update({"elapsed_s": elapsed, "error": None, **fields})
    return json.dumps(line)


def write_synthetic(path: Path, sub_calls: int, concurrency: int = 16, needle: str = "NEEDLE-4242") -> Synthetic:
    lines: list[str] = []
    ids = iter(range(1, 1 << 40))
    load_id = next(ids)
    lines.append(
        event(load_id, None, "tool", "load_context", START, 0.2, arguments={"path": "/data/logs"}, outcome="ok")
    )
    tool_id, cell_id = next(ids), next(ids)
    each = 0.8
    failed = sub_calls // 3 + 1
    needle_at = sub_calls - sub_calls // 8
    first_sub = None
    for index in range(sub_calls):
        sub_id = next(ids)
        first_sub = first_sub or sub_id
        wave, slot = divmod(index, concurrency)
        started = START + 1.0 + wave * each + slot * 0.001
        answer = f"chunk {index}: 3 errors" + (f" {needle}" if index == needle_at else "")
        fields: dict[str, object] = {
            "model": "claude-haiku-4-5",
            "backend": "anthropic",
            "prompt": f"Count the errors in chunk {index}",
            "answer": answer,
            "input_tokens": 1200,
            "output_tokens": 8,
            "cost_usd": 0.00124,
            "cached": False,
            "attempts": 1,
        }
        if index == failed:
            fields.update(answer=None, error="the provider answered 529: overloaded", kind="overloaded", attempts=4)
        lines.append(event(sub_id, cell_id, "sub_call", "claude-haiku-4-5", started, each * 0.95, **fields))
    waves = -(-sub_calls // concurrency)
    fan_elapsed = 1.0 + waves * each
    code = "parts = chunks(ctx, 4000)\ncounts = llm_query_batched([f'Count the errors in {p}' for p in parts])"
    lines.append(event(cell_id, tool_id, "cell", "cell 1", START + 0.5, fan_elapsed, code=code, outcome="ok"))
    lines.append(event(tool_id, None, "tool", "run_code", START + 0.4, fan_elapsed + 0.2, arguments={"code": code}))

    later = START + 2 + fan_elapsed
    tool2, cell2, rlm, child_tool, child_cell = (next(ids) for _ in range(5))
    for index in range(3):
        sub_id = next(ids)
        lines.append(
            event(
                sub_id,
                child_cell,
                "sub_call",
                "claude-haiku-4-5",
                later + 0.3 + index * 0.2,
                0.15,
                prompt=f"child question {index}",
                answer=f"child answer {index}",
                input_tokens=100,
                output_tokens=5,
            )
        )
    lines.append(event(child_cell, child_tool, "cell", "cell 1", later + 0.25, 0.8, code="llm_query('child')"))
    lines.append(event(child_tool, rlm, "tool", "run_code", later + 0.2, 0.9, arguments={"code": "llm_query('child')"}))
    lines.append(
        event(
            rlm,
            cell2,
            "rlm",
            "child RLM 1a2b3c4d",
            later + 0.1,
            1.2,
            prompt="Which service failed first?",
            level=2,
            outcome="iterations",
            answer="probably auth",
            iterations=6,
        )
    )
    lines.append(
        event(cell2, tool2, "cell", "cell 2", later + 0.05, 1.3, code="rlm_query('Which service failed first?')")
    )
    lines.append(event(tool2, None, "tool", "run_code", later, 1.4, arguments={"code": "rlm_query('...')"}))

    tool3, cell3 = next(ids), next(ids)
    failing = "raise ValueError('the needle was not found')"
    lines.append(
        event(
            cell3,
            tool3,
            "cell",
            "cell 3",
            later + 2,
            0.01,
            code=failing,
            outcome="error",
            error="Traceback (most recent call last):\nValueError: the needle was not found",
        )
    )
    lines.append(event(tool3, None, "tool", "run_code", later + 1.99, 0.03, arguments={"code": failing}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert first_sub is not None or sub_calls == 0
    return Synthetic(path, len(lines), cell_id, (first_sub or 0) + failed, (first_sub or 0) + needle_at, rlm, cell3)
