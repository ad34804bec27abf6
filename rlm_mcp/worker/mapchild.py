"""The child a map task starts on a cluster node: the model's function runs here, locked down like the REPL.

A Ray task (rlm_mcp/cluster/pieces.py) reads its object with the cluster's credentials, then starts this
module as `python -I -c BOOTSTRAP <package parent>`, with an allow-listed environment, a fresh scratch
directory as its working directory, and as stdin a file the task wrote: one line of JSON (the sandbox mode
and limits, the function's source and name, the object's URL), then the object's text as UTF-8.

The child reads that one line, then locks itself down with the REPL worker's own code (worker/lockdown:
no network, no processes, no reading other processes, writes only in its scratch directory, rlimits and a
CPU backstop) before it reads the text, imports the helpers or runs any of the model's code. Under
RLM_MCP_SANDBOX=strict it refuses to run the function if a layer is missing; otherwise it names the
missing layers ("gaps") in its report: one line of JSON, {"gaps": [...]} or {"error": why it runs nothing},
on a descriptor the task passed (its number the last argument), written and closed before it reads the
text or runs any of the model's code, so the function can never write the report. It answers one line
of JSON on its original stdout: {"value": ...} (or the value's repr when it is not JSON, and a "note" that
says so) or {"error": "Type: message (line N of fn)"}; the function's own prints go to stderr. The task
treats that answer as untrusted text (the function can write it too): it is parsed as JSON, and only
the value or the error, and a note spelled as this module spells it, are taken.

Worker side (tests/test_boundary.py): standard library and the worker's own modules only.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any

from rlm_mcp.sandbox.policy import SYSTEM_READ_ONLY, SandboxPolicy, python_paths
from rlm_mcp.sandbox.prctl import make_undumpable
from rlm_mcp.worker import lockdown
from rlm_mcp.worker.lockdown.limits import set_cpu_backstop

MAX_HEADER_BYTES = 1_048_576  # the function's source is at most 100,000 characters
MAX_ERROR_CHARS = 500
MODES = ("auto", "strict", "off")


class _Refused(Exception):
    """The request is malformed, or the sandbox cannot hold as the mode demands; said in the answer."""


def policy_for(header: dict[str, Any], scratch: str) -> SandboxPolicy:
    """Reads: this Python and the system's libraries (never the roots: the text comes on stdin). Writes:
    the scratch directory alone."""
    mode = header.get("mode")
    if mode not in MODES:
        raise _Refused(f"unknown sandbox mode {mode!r}")
    numbers = [header.get(key) for key in ("memory_bytes", "write_bytes", "cpu_s")]
    if not all(isinstance(number, int | float) and number > 0 for number in numbers):
        raise _Refused("the task sent no limits")
    return SandboxPolicy(
        mode=mode,
        read_only=(*python_paths(), *SYSTEM_READ_ONLY),
        read_write=(scratch,),
        memory_bytes=int(numbers[0]),
        write_bytes=int(numbers[1]),
        cell_cpu_s=float(numbers[2]),
    )


def lock_down(policy: SandboxPolicy) -> list[str]:
    """Apply every layer this node allows; the missing ones as "name (why)". Strict mode refuses a gap."""
    report = lockdown.apply(policy)
    make_undumpable()
    if policy.mode != "off":
        set_cpu_backstop(policy.cell_cpu_s)
    gaps = [f"{layer.name} ({layer.detail})" for layer in report.layers if not layer.active]
    if policy.mode == "strict" and gaps:
        raise _Refused("RLM_MCP_SANDBOX=strict, and this node cannot provide every layer: " + "; ".join(gaps))
    return gaps if policy.mode != "off" else ["all layers (RLM_MCP_SANDBOX=off)"]


def call(header: dict[str, Any], text: str) -> Any:
    """The model's function on the text: run only after the lockdown."""
    from rlm_mcp.worker.helpers import HELPERS  # imported locked down: nothing writable is on the path

    code, name, path = header.get("code"), header.get("name"), header.get("path")
    if not (isinstance(code, str) and isinstance(name, str) and name.isidentifier() and isinstance(path, str)):
        raise _Refused("the task sent no function")
    namespace: dict[str, Any] = {"__name__": "rlm_map", **HELPERS}
    exec(compile(code, f"<rlm_map {name}>", "exec"), namespace)
    return namespace[name](text, path)


def encode(value: Any) -> dict[str, Any]:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        try:
            kept = repr(value)
        except Exception as exc:  # a hostile __repr__
            return {"error": _describe(exc)}
        return {"value": kept, "note": f"not JSON ({type(value).__name__[:80]}): kept as its repr"}
    return {"value": value}


def _describe(exc: BaseException, name: str = "") -> str:
    """`Type: message (line N of fn)`: the line is the deepest of the function's own that the error passed."""
    lines = [tb.tb_lineno for tb in _frames(exc.__traceback__) if tb.tb_frame.f_code.co_filename == f"<rlm_map {name}>"]
    where = f" (line {lines[-1]} of {name})" if name and lines else ""
    try:
        said = f"{type(exc).__name__}: {exc}"
    except Exception:  # a hostile __str__
        said = type(exc).__name__
    return said[: MAX_ERROR_CHARS - len(where)] + where


def _frames(tb: Any) -> list[Any]:
    found = []
    while tb is not None:
        found.append(tb)
        tb = tb.tb_next
    return found


def report(descriptor: int, message: dict[str, Any]) -> None:
    """The sandbox report, whole, then the descriptor closed: nothing run after this can write to it."""
    try:
        data = memoryview(json.dumps(message).encode() + b"\n")
        while data:
            data = data[os.write(descriptor, data) :]
    finally:
        os.close(descriptor)


def main(argv: list[str]) -> int:
    answer_fd = os.dup(1)
    os.dup2(2, 1)  # the function's prints go to stderr: stdout is the answer's
    sys.dont_write_bytecode = True
    report_fd = int(argv[-1]) if len(argv) > 1 and argv[-1].isdigit() else -1
    name = ""
    try:
        if report_fd < 0:
            raise _Refused("the task passed no descriptor for the sandbox report")
        header = json.loads(sys.stdin.buffer.readline(MAX_HEADER_BYTES))
        if not isinstance(header, dict):
            raise _Refused("the task sent no header")
        name = str(header.get("name") or "")
        gaps = lock_down(policy_for(header, os.getcwd()))
    except BaseException as exc:  # nothing of the model's runs: the report says why
        with contextlib.suppress(OSError):
            report(report_fd, {"error": _describe(exc)})
        return 0
    report(report_fd, {"gaps": gaps})
    try:
        text = sys.stdin.buffer.read().decode("utf-8", "replace")
        answer = encode(call(header, text))
    except BaseException as exc:  # the model's code raised, or exited: either way the answer says so
        answer = {"error": _describe(exc, name)}
    try:
        data = memoryview(json.dumps(answer).encode() + b"\n")
        while data:
            data = data[os.write(answer_fd, data) :]
    except (TypeError, ValueError, RecursionError, OSError):  # past the file-size limit, say
        os.write(answer_fd, json.dumps({"error": "the function's value could not be written"}).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
