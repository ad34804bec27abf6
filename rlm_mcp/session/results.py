"""Tool results built from what the worker replied: every field it sent is checked and bounded here."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from rlm_mcp.contexts.selection import Selection, tree_summary
from rlm_mcp.escaping import printable
from rlm_mcp.host.worker_host import CallOutcome
from rlm_mcp.tools.schemas import LoadResult, RunResult, SubCallUsage, VarInfo
from rlm_mcp.units import CHARS_PER_TOKEN, MiB

# -- building results ------------------------------------------------------------------------------


DIGEST = re.compile(r"[0-9a-f]{64}")
DISK_CHECK_S = 1.0
SCRATCH_MAX_ENTRIES = 100_000
MAX_THREADS_NAMED = 10
MAX_CONTEXTS_NAMED = 10
MAX_DESCRIPTORS_NAMED = 8
RUNNING_OUTPUT_CHARS = 1_000  # the tail of a running cell's output shown with `running`


def text_field(value: Any) -> str | None:
    """A text field of a worker reply, for the trace: anything but a str is dropped, not serialised."""
    return value if isinstance(value, str) else None


REQUEST_IDS = re.compile(r"\b(?:req|msg|chatcmpl|resp)[_-][A-Za-z0-9]+|\b[0-9a-f]{16,}\b")


def error_kind(error: str) -> str:
    """An error without the ids that make each copy unique (request ids), so identical ones are counted."""
    return REQUEST_IDS.sub("...", error)


def failures_note(failures: int, errors: Counter[str]) -> str:
    """One line however many failed: each distinct error once, with how often it came."""
    why = "; ".join(
        f"{count:,} x {printable(error, 200)}" if count > 1 else printable(error, 200)
        for error, count in errors.most_common(3)
    )
    more = f"; and {len(errors) - 3:,} other errors" if len(errors) > 3 else ""
    return (
        f"{failures:,} sub-call(s) failed"
        + (f" ({why}{more})" if why else "")
        + "; llm_query_batched returns them as LLMError objects (test with isinstance(x, LLMError))"
    )


def running_threads(names: Any) -> list[str]:
    if not isinstance(names, list) or not names:
        return []
    shown = ", ".join(printable(str(name), 60) for name in names[:MAX_THREADS_NAMED])
    more = f" and {len(names) - MAX_THREADS_NAMED:,} more" if len(names) > MAX_THREADS_NAMED else ""
    return [
        f"threads still running after this cell: {shown}{more} (they go on using CPU between cells; "
        "they stop when the session closes)"
    ]


def valid_snapshot(saved: Any) -> dict[str, str]:
    """Variable name -> snapshot digest, from the worker or a record: identifiers and SHA-256 digests only."""
    if not isinstance(saved, dict):
        return {}
    return {
        name: digest
        for name, digest in saved.items()
        if isinstance(name, str) and name.isidentifier() and isinstance(digest, str) and DIGEST.fullmatch(digest)
    }


def valid_call(call: Any) -> bool:
    return (
        isinstance(call, dict)
        and isinstance(call.get("prompt"), str)
        and all(isinstance(call.get(k), (str, type(None))) for k in ("system", "model"))
        and isinstance(call.get("max_tokens"), (int, type(None)))
    )


def cell_usage(usage: SubCallUsage) -> SubCallUsage | None:
    return usage if usage.calls or usage.failures or usage.cache_hits else None


def skipped_text(selection: Selection) -> str:
    return ", ".join(f"{reason}: {count:,}" for reason, count in selection.skipped.most_common())


def load_result(
    name: str, source: str, reply: dict[str, Any], selection: Selection | None, notes: list[str]
) -> LoadResult:
    skipped: dict[str, int] = dict(selection.skipped) if selection else {}
    examples: dict[str, list[str]] = dict(selection.examples) if selection else {}
    for reason in ("binary", "unreadable", "too_large"):
        paths = [str(path) for path in reply.get(reason) or []]
        if paths:
            skipped[reason] = skipped.get(reason, 0) + len(paths)
            examples[reason] = [*examples.get(reason, []), *paths][:3]
    notes.extend(printable(str(note), 500) for note in reply.get("notes") or [])  # they quote file contents
    if selection is not None and selection.files:
        notes.append(printable(tree_summary(selection.files)))
    if reply["kind"] == "mapped":
        notes.append(
            "memory-mapped (MappedText), not read into memory: len(), slices (str), find/count/in and line iteration "
            "work as on str; use grep()/chunk()/search() for the whole text, not str(...)"
        )
    if reply.get("replaced_chars"):
        notes.append(
            f"{reply['replaced_chars']:,} undecodable bytes were replaced with U+FFFD (the text is not valid UTF-8)"
        )
    return LoadResult(
        name=name,
        kind=reply["kind"],
        source=source,
        chars=reply["chars"],
        lines=reply["lines"],
        files=reply.get("files"),
        bytes=reply.get("bytes") if selection is None else selection.total_bytes,
        est_tokens=reply["chars"] // CHARS_PER_TOKEN,
        preview=reply["preview"],
        replaced_chars=reply.get("replaced_chars", 0),
        skipped=skipped,
        skipped_examples=examples,
        notes=notes,
    )


def run_result(outcome: CallOutcome, elapsed: float, notes: list[str]) -> RunResult:
    reply = outcome.reply or {}
    if not reply.get("ok"):
        return RunResult(outcome="error", state="kept", error=str(reply.get("error")), elapsed_s=elapsed, notes=notes)
    if outcome.fate == "interrupted":
        notes.append(f"{outcome.cause}: the code was interrupted (KeyboardInterrupt); REPL state kept")
    deleted = deleted_contexts(reply.get("deleted_contexts"))
    notes.extend(f"{name} is a loaded context: del does not free it; unload({name!r}) does" for name in deleted)
    status = "interrupted" if outcome.fate == "interrupted" else ("error" if reply["error"] else "ok")
    result = RunResult(
        outcome=status,
        state="kept",
        stdout=reply["stdout"],
        stdout_chars=reply["stdout_chars"],
        stderr=reply["stderr"],
        stderr_chars=reply["stderr_chars"],
        result=reply["result"],
        error=reply["error"],
        error_type=reply["error_type"],
        changed=[VarInfo(**item) for item in reply["changed"]],
        changed_total=reply["changed_total"],
        restored=reply["restored"],
        elapsed_s=elapsed,
        notes=notes,
    )
    result._deleted_contexts = deleted
    return result


def deleted_contexts(names: Any) -> list[str]:
    """The loaded contexts a cell's `del` unbound (the REPL put them back: del frees nothing; unload() does)."""
    if not isinstance(names, list):
        return []
    return [name for name in names if isinstance(name, str) and name.isidentifier()][:MAX_CONTEXTS_NAMED]


def over_disk_cap(used: int, unnamed: int, descriptors: list[int], cap_mb: int) -> str:
    """Why the working directory is over its cap, in one line: its size rounded up to a tenth of a MiB (so
    it never reads as equal to the cap), and the descriptors of files held without a name, to close."""
    held = ""
    if unnamed:
        left = len(descriptors) - MAX_DESCRIPTORS_NAMED
        named = ", ".join(f"fd {number}" for number in descriptors[:MAX_DESCRIPTORS_NAMED])
        named += f" and {left:,} more" if left > 0 else ""
        held = f", {_mib(unnamed)} MiB of it in files open without a name" + (f": {named}" if named else "")
    close = "; close them" if descriptors else ("; close files deleted while open" if unnamed else "")
    return (
        f"the working directory holds {_mib(used)} MiB, over this session's cap of {cap_mb:,} MiB "
        f"(RLM_MCP_DISK_LIMIT_MB){held}{close}; delete files with os.remove"
    )


def _mib(size: int) -> str:
    return f"{math.ceil(size * 10 / MiB) / 10:,.1f}"


def lost_result(outcome: CallOutcome, elapsed: float, notes: list[str], limit: int) -> RunResult:
    tail = outcome.stderr_tail[-limit:]
    return RunResult(
        outcome="killed" if outcome.fate == "killed" else "crashed",
        state="lost",
        stderr=tail,
        stderr_chars=len(tail),
        error=outcome.cause,
        error_type="WorkerKilled" if outcome.fate == "killed" else "WorkerCrashed",
        elapsed_s=elapsed,
        notes=notes,
    )
