"""The structured results of the tools: the public contract a client can rely on.

Field names are short and there are no per-field descriptions on purpose: the output schemas are sent with
every tools/list, and every character of them costs the root model tokens on every turn.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

Outcome = Literal["ok", "error", "interrupted", "killed", "crashed", "running"]


def _drop_property_titles(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)


class Compact(BaseModel):
    """A model whose JSON schema has no generated per-field titles ("Stdout Chars"): they say nothing new."""

    model_config = ConfigDict(json_schema_extra=_drop_property_titles)


class VarInfo(Compact):
    name: str
    type: str
    size: int | None = None
    preview: str


class LoadResult(Compact):
    name: str
    kind: Literal["str", "mapped", "files", "json", "jsonl", "csv", "pdf", "docx"]
    source: str
    chars: int
    lines: int
    files: int | None = None
    bytes: int | None = None
    est_tokens: int
    preview: str
    replaced_chars: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    skipped_examples: dict[str, list[str]] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    behaviors: list[str] = Field(default_factory=list)  # the handbook's, for this kind of input
    findings: list[str] = Field(default_factory=list)  # earlier sessions' findings about this very content
    _more_findings: bool = PrivateAttr(default=False)  # some were cut or left out: render says recall()


class SubCallUsage(Compact):
    calls: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0
    subscription_usd: float = 0.0  # the part of cost_usd run on a subscription login: API prices, not charged


class SubQueryResult(Compact):
    answer: str
    model: str
    backend: str
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    cached: bool
    session_usage: SubCallUsage


class RunResult(Compact):
    outcome: Outcome  # running: still going after wait_s; stdout is what it printed so far
    state: Literal["kept", "restored", "lost"]  # restored: variables as of the last successful cell
    cell: int | None = None
    stdout: str = ""
    stdout_chars: int = 0
    stderr: str = ""
    stderr_chars: int = 0
    result: str | None = None
    error: str | None = None
    error_type: str | None = None
    changed: list[VarInfo] = Field(default_factory=list)
    changed_total: int = 0
    restored: list[str] = Field(default_factory=list)
    _deleted_contexts: list[str] = PrivateAttr(default_factory=list)  # of `restored`: contexts `del` unbound
    elapsed_s: float
    sub_calls: SubCallUsage | None = None
    notes: list[str] = Field(default_factory=list)
    finished_cell: RunResult | None = None  # an earlier cell that finished after its call answered `running`
