"""Driving a replay and comparing it with the recording.

The session's top-level tool calls are sent again, in order, with their recorded arguments, to a fresh
server of the operator's settings (a temporary workspace, no memory) whose only backend is the recording,
through the real MCP client in memory: the same path a client's calls take, so what is compared is what a
client would have got. Each cell is waited for to the end (a recorded run_code that answered `running` and
the calls that then waited for it are one step here). The comparison is between the two traces, field by
field, so both sides are shortened the same way by the same tracer.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm_mcp.config import Settings
from rlm_mcp.errors import TraceError
from rlm_mcp.escaping import printable
from rlm_mcp.replay.backend import ReplayBackend
from rlm_mcp.replay.record import BUSY, Recording, Step, code_of, load
from rlm_mcp.tools.declarations import TOOLS
from rlm_mcp.trace import whole_lines

CELL_FIELDS = ("outcome", "stdout", "stderr", "result", "error")
TOOL_FIELDS = {"load_context": ("outcome", "error", "kind", "chars"), "sub_query": ("outcome", "error")}
MAX_WAITS = 10  # run_code() calls to wait for one cell; each waits up to --max-timeout-s, and a cell stops by then
DIFF_LINES = 12  # of one field's unified diff
LINE_CHARS = 200  # of one line of a diff

# Arguments the replay gives itself: a cell's code whole from the trace (code_of), its own waiting, its own session.
SENT_BY_REPLAY = frozenset({"code", "wait_s", "session"})
# What each tool accepts (rlm_mcp/tools/declarations.py), and the types its recorded arguments must have to be sent
# again (a forged trace may hold anything; the SDK would refuse a wrong type before the session, leaving no step
# to compare).
ARGUMENTS: dict[str, dict[str, tuple[type, ...]]] = {
    tool.name: {p.name: p.value_types for p in tool.parameters if p.name not in SENT_BY_REPLAY} for tool in TOOLS
}


@dataclass
class StepReport:
    label: str
    tool: str
    status: str  # "same", "differs", "not replayed" or "skipped"
    is_cell: bool
    differs_in: list[str] = field(default_factory=list)
    diffs: dict[str, list[str]] = field(default_factory=dict)
    why: str = ""
    sub_calls: tuple[int, int] = (0, 0)  # recorded, replayed
    not_recorded: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.label,
            "tool": self.tool,
            "status": self.status,
            "differs_in": self.differs_in,
            "diffs": self.diffs,
            "why": self.why,
            "sub_calls": {"recorded": self.sub_calls[0], "replayed": self.sub_calls[1]},
            "not_recorded": self.not_recorded,
        }


@dataclass
class Report:
    trace: Path
    steps: list[StepReport]
    not_recorded: int
    notes: list[str]

    @property
    def exit_code(self) -> int:
        return 0 if all(step.status in ("same", "skipped") for step in self.steps) and not self.not_recorded else 1


def _arguments(step: Step) -> dict[str, Any] | str:
    """The call to send again, or why it cannot be sent."""
    wanted = ARGUMENTS[step.tool]
    sent: dict[str, Any] = {}
    for name, value in step.arguments.items():
        if name not in wanted or value is None:
            continue
        if not isinstance(value, wanted[name]) or (isinstance(value, bool) and bool not in wanted[name]):
            return f"its recorded `{printable(name, 40)}` is not a {wanted[name][0].__name__}"
        if name == "exclude" and not all(isinstance(item, str) for item in value):
            return "its recorded `exclude` is not a list of strings"
        sent[name] = value
    if step.tool == "run_code":
        code = code_of(step)
        if code is None:
            return "its code is not in the trace whole"
        sent["code"] = code
    return sent


async def _send(client: Any, step: Step, arguments: dict[str, Any], settings: Settings) -> None:
    if step.tool != "run_code":
        await client.call_tool(step.tool, arguments)
        return
    wait = {"wait_s": settings.max_timeout_s}
    result = await client.call_tool("run_code", {**arguments, **wait})
    for _ in range(MAX_WAITS):
        data = result.structured_content or {}
        if data.get("outcome") != "running":
            return
        result = await client.call_tool("run_code", wait)


async def replay(recording: Recording, settings: Settings, keep_trace: Path | None = None) -> Report:
    """Send the recording's steps to a fresh server answered by the recording, and compare the traces.
    `settings` must have a workspace of its own (the replay's session and trace live there)."""
    from mcp import Client  # deferred: `rlm-mcp replay --help` stays instant

    from rlm_mcp.surface.server import build_server

    backend = ReplayBackend(recording)
    sent: list[Step] = []
    reports: dict[int, StepReport] = {}
    recorded_calls = CallCounter(settings.workspace)
    async with Client(build_server(settings, backend=backend)) as client:
        for step in recording.steps:
            if step.wait:
                continue
            arguments = _arguments(step) if not step.skip else step.skip
            if isinstance(arguments, str):
                skipped = step.tool == "run_code" and (
                    step.arguments.get("code") is None or BUSY in str(step.event.get("error"))
                )  # an interrupt, or a call refused while a cell ran: timing, not analysis
                reports[step.number] = _not_replayed(step, arguments, "skipped" if skipped else "not replayed")
                continue
            await _send(client, step, arguments, settings)
            if recorded_calls.grew():
                sent.append(step)
            else:  # refused before the session (the SDK checks the arguments): it has no step to pair with
                why = "the replay server refused its recorded arguments before the session saw them"
                reports[step.number] = _not_replayed(step, why)
    replayed = _replayed_steps(settings.workspace, keep_trace)
    for index, recorded in enumerate(sent):  # the n-th call the replay's session recorded is the n-th sent
        again = replayed[index] if index < len(replayed) else None
        if again is None or again.tool != recorded.tool:
            reports[recorded.number] = _not_replayed(recorded, "the replay's trace does not hold this call")
        else:
            reports[recorded.number] = compare(recorded, again)
    steps = [reports[number] for number in sorted(reports)]
    return Report(recording.path, steps, backend.not_recorded, recording.notes)


class CallCounter:
    """Counts the top-level calls the replay's session has recorded (not the ones that only waited for a
    cell), reading its trace on from where it last stopped: after each call sent, whether the session saw it."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.trace: Path | None = None
        self.offset = 0
        self.count = 0
        self._counted = 0

    def grew(self) -> bool:
        if self.trace is None:
            self.trace = next(iter(sorted((self.workspace / "sessions").glob("*/trace.jsonl"))), None)
        while self.trace is not None:
            lines, after, _ = whole_lines(self.trace, self.offset)
            if after == self.offset:
                break
            self.offset = after
            for line in lines:
                try:
                    event = json.loads(line) if line is not None else None
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                arguments = event.get("arguments") if isinstance(event.get("arguments"), dict) else {}
                waited = event.get("name") == "run_code" and arguments.get("code") is None
                if event.get("type") == "tool" and event.get("parent") is None and not waited:
                    self.count += 1
        grew, self._counted = self.count > self._counted, self.count
        return grew


def _not_replayed(step: Step, why: str, status: str = "not replayed") -> StepReport:
    return StepReport(step.label, step.tool, status, step.cell is not None, why=why)


def _replayed_steps(workspace: Path, keep_trace: Path | None) -> list[Step]:
    traces = sorted((workspace / "sessions").glob("*/trace.jsonl"))
    if not traces:
        return []
    if keep_trace is not None:
        keep_trace.write_bytes(traces[0].read_bytes())
    try:
        steps = load(traces[0]).steps
    except TraceError:
        return []
    return [step for step in steps if not step.wait]


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _diff(recorded: str, replayed: str) -> list[str]:
    lines = difflib.unified_diff(recorded.splitlines(), replayed.splitlines(), "recorded", "replayed", lineterm="", n=1)
    shown = [printable(line, LINE_CHARS) for _, line in zip(range(DIFF_LINES), lines, strict=False)]
    if next(lines, None) is not None:
        shown.append("...")
    return shown


def compare(recorded: Step, replayed: Step) -> StepReport:
    report = StepReport(recorded.label, recorded.tool, "same", recorded.cell is not None)
    pairs: list[tuple[str, Any, Any]]
    if recorded.cell is not None or replayed.cell is not None:
        if recorded.cell is None or replayed.cell is None:
            ran = "ran" if replayed.cell is not None else "did not run"
            error = _text(replayed.event.get("error") or recorded.event.get("error"))
            pairs = [("cell", "", f"the cell {ran} in the replay" + (f": {error}" if error else ""))]
        else:
            pairs = [(name, recorded.cell.get(name), replayed.cell.get(name)) for name in CELL_FIELDS]
    else:
        names = TOOL_FIELDS.get(recorded.tool, ("outcome", "error"))
        pairs = [(name, recorded.event.get(name), replayed.event.get(name)) for name in names]
    for name, before, after in pairs:
        if _text(before) != _text(after):
            report.differs_in.append(name)
            report.diffs[name] = _diff(_text(before), _text(after))
    report.sub_calls = (recorded.sub_calls, replayed.sub_calls)
    if recorded.sub_calls != replayed.sub_calls:
        report.differs_in.append("sub-calls")
    report.not_recorded = replayed.not_recorded
    if replayed.not_recorded:
        report.differs_in.append("sub-calls not in the record")
    if report.differs_in:
        report.status = "differs"
    return report
