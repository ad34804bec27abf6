"""A replay's report: one line per step, an excerpt of what differs, a summary; or the same as JSON.

Labels, diffs and reasons quote the trace (cell names, output, error texts), so each has been through
`printable` already (see run.py); the JSON is printed with ensure_ascii, so no control character of the
trace reaches the terminal either way.
"""

from __future__ import annotations

import json
from typing import Any

from rlm_mcp.escaping import printable
from rlm_mcp.replay.run import Report, StepReport

NOTE_CHARS = 500


def _line(step: StepReport) -> list[str]:
    if step.status == "same":
        return [f"{step.label}: same"]
    if step.status in ("not replayed", "skipped"):
        return [f"{step.label}: {step.status}: {step.why}"]
    recorded, replayed = step.sub_calls
    named = [
        f"{name} (recorded {recorded:,}, replayed {replayed:,})" if name == "sub-calls" else name
        for name in step.differs_in
    ]
    lines = [f"{step.label}: differs in {', '.join(named)}"]
    for name, diff in step.diffs.items():
        lines += [f"  {name}:", *(f"    {line}" for line in diff)]
    if step.not_recorded:
        lines.append(f"  {step.not_recorded:,} sub-calls asked something the session never asked")
    return lines


def summary(report: Report) -> str:
    cells = [step for step in report.steps if step.is_cell]
    others = [step for step in report.steps if not step.is_cell]
    same = sum(step.status == "same" for step in cells)
    differ = sum(step.status == "differs" for step in cells)
    parts = [f"{same:,} cells same, {differ:,} differ"]
    other_same = sum(step.status == "same" for step in others)
    other_differ = sum(step.status == "differs" for step in others)
    parts.append(f"{other_same:,} other calls same, {other_differ:,} differ")
    not_replayed = sum(step.status == "not replayed" for step in report.steps)
    if not_replayed:
        parts.append(f"{not_replayed:,} not replayed")
    parts.append(f"{report.not_recorded:,} sub-calls not in the record")
    return "; ".join(parts)


def render_text(report: Report) -> str:
    lines = [f"Replay of {printable(str(report.trace), 1000)}"]
    lines += [f"Note: {printable(note, NOTE_CHARS)}" for note in report.notes]
    for step in report.steps:
        lines += _line(step)
    lines.append(summary(report))
    return "\n".join(lines)


def render_json(report: Report) -> str:
    data: dict[str, Any] = {
        "trace": str(report.trace),
        "steps": [step.as_json() for step in report.steps],
        "not_recorded": report.not_recorded,
        "notes": report.notes,
        "summary": summary(report),
        "exit_code": report.exit_code,
    }
    return json.dumps(data, indent=1, ensure_ascii=True)
