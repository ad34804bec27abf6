"""Tool results as the text the root model reads.

Clients put this text in the model's context, so it is compact and plain: stdout as it was printed (not
JSON-escaped), then only the sections that have something to say. The same data is in structuredContent.
"""

from __future__ import annotations

from rlm_mcp.models import LoadResult, RunResult, SubCallUsage, SubQueryResult, VarInfo


def _size(info: VarInfo) -> str:
    if info.size is None:
        return info.type
    unit = "chars" if info.type == "str" else ("bytes" if info.type in ("bytes", "bytearray") else "items")
    return f"{info.type}, {info.size:,} {unit}"


def render_run(result: RunResult) -> str:
    parts: list[str] = []
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if result.stderr:
        parts.append("[stderr]\n" + result.stderr.rstrip("\n"))
    if result.result is not None:
        parts.append("Out: " + result.result)
    if result.error:
        parts.append(result.error.rstrip("\n"))
    if result.changed:
        shown = "; ".join(f"{v.name} ({_size(v)}) = {v.preview}" for v in result.changed)
        more = result.changed_total - len(result.changed)
        parts.append("Changed: " + shown + (f"; and {more:,} more" if more > 0 else ""))
    if result.restored:
        parts.append(
            "Restored REPL-provided names you had overwritten: "
            + ", ".join(result.restored)
            + " (store your results under other names)"
        )
    if result.sub_calls:
        parts.append("Sub-calls: " + _usage(result.sub_calls))
    parts.extend(f"Note: {note}" for note in result.notes)
    if not parts:
        parts.append("(no output)")
    parts.append(f"[{result.outcome}, state {result.state}, {result.elapsed_s:.3f} s]")
    return "\n".join(parts)


def render_load(result: LoadResult) -> str:
    shapes = {
        "files": f"dict of {result.files or 0:,} files (path -> text)",
        "mapped": "MappedText (memory-mapped, str-like)",
        "json": "parsed JSON",
        "jsonl": "list of parsed JSON records",
        "csv": "list of row dicts",
        "pdf": "list of page texts",
        "docx": "str (document text)",
    }
    shape = shapes.get(result.kind, "str")
    lines = [
        f"Loaded {result.name!r} from {result.source}: {shape}, {result.chars:,} chars, "
        f"{result.lines:,} lines, ~{result.est_tokens:,} tokens (estimate)."
    ]
    if result.skipped:
        skipped = ", ".join(
            f"{reason} {count:,}"
            + (f" (e.g. {', '.join(result.skipped_examples[reason])})" if result.skipped_examples.get(reason) else "")
            for reason, count in result.skipped.items()
        )
        lines.append(f"Skipped: {skipped}.")
    lines.extend(f"Note: {note}" for note in result.notes)
    textual = result.kind in ("str", "mapped", "docx")
    lines.append(f"Preview: {result.preview!r}" if textual else f"Preview: {result.preview}")
    return "\n".join(lines)


def _money(cost: float | None) -> str:
    return "cost unknown" if cost is None else f"${cost:.4f}"


def _usage(usage: SubCallUsage) -> str:
    text = (
        f"{usage.calls:,} calls, {usage.failures:,} failed, {usage.input_tokens:,} in / "
        f"{usage.output_tokens:,} out tokens, {_money(usage.cost_usd)}"
    )
    return text + (f", {usage.cache_hits:,} answered from cache" if usage.cache_hits else "")


def render_sub_query(result: SubQueryResult) -> str:
    origin = "cache" if result.cached else result.backend
    return (
        f"{result.answer}\n[{result.model} via {origin}: {result.input_tokens:,} in / {result.output_tokens:,} out "
        f"tokens, {_money(result.cost_usd)}; session so far: {_usage(result.session_usage)}]"
    )
