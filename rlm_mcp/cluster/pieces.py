"""What a Ray task runs next to the data: read one object of a remote source, then run the map on it.

Imported on the cluster's workers (rlm-mcp installed there); it depends on the standard library, fsspec and
the worker-side helpers only. The model's function never runs in the task's own process: the task reads the
object (with the cluster's credentials), then runs the function in a child Python with no credentials in its
environment, which gets the text on stdin and answers JSON on stdout. The task parses that JSON into plain
values (dicts, lists, strings, numbers) before returning, so what Ray carries back to the server, and
unpickles there, was made by this module's code from plain data, never by the model's.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import subprocess
import sys
from typing import Any

MAX_RESULT_CHARS = 100_000
MAX_PROMPT_CHARS = 2_000_000
FUNCTION_TIMEOUT_S = 600
DECOMPRESS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}
# The child's environment: enough to run Python, nothing of the task's (no cloud credentials, no tokens).
KEPT_VARIABLES = ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "HOME", "TMPDIR")
RUNNER = r"""
import json, sys
from rlm_mcp.worker.helpers import HELPERS
request = json.loads(sys.stdin.buffer.read())
namespace = {"__name__": "rlm_map", **HELPERS}
exec(compile(request["code"], "<rlm_map " + request["name"] + ">", "exec"), namespace)
value = namespace[request["name"]](request["text"], request["path"])
try:
    out = json.dumps({"value": value})
except (TypeError, ValueError):
    out = json.dumps({"value": repr(value)})
sys.stdout.write(out)
"""


class MapFailure(Exception):
    """One object's map failed; the message is the reason (a plain str, whatever the model's code raised)."""


def read_text(url: str, max_bytes: int) -> str:
    import fsspec

    with fsspec.open(url, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise MapFailure(f"{url} holds more than the {max_bytes:,} bytes a map reads of one object")
    for suffix, decompress in DECOMPRESS.items():
        if url.endswith(suffix):
            data = decompress(data)
            break
    return data.decode("utf-8", "replace")


def run_function(url: str, code: str, name: str, max_bytes: int) -> dict[str, Any]:
    """The model's function on one object's text, in a child process; its answer as plain data."""
    request = json.dumps({"code": code, "name": name, "text": read_text(url, max_bytes), "path": url})
    environment = {key: os.environ[key] for key in KEPT_VARIABLES if key in os.environ}
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", RUNNER] if "PYTHONPATH" not in environment else [sys.executable, "-c", RUNNER],
            input=request.encode(), capture_output=True, timeout=FUNCTION_TIMEOUT_S, env=environment,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise MapFailure(f"the function ran over {FUNCTION_TIMEOUT_S} s on {url}") from None
    if done.returncode != 0:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise MapFailure(last[0][:500])
    if len(done.stdout) > MAX_RESULT_CHARS:
        raise MapFailure(f"the result for {url} is {len(done.stdout):,} bytes as JSON, over {MAX_RESULT_CHARS:,}")
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        raise MapFailure(f"the function's process answered something other than JSON for {url}") from None
    if not isinstance(answer, dict) or "value" not in answer:
        raise MapFailure(f"the function's process answered no value for {url}")
    return {"value": answer["value"]}


def make_prompt(url: str, template: str, max_bytes: int) -> dict[str, Any]:
    """The template filled with the object's text ({text}) and its URL ({path}). No model code runs here."""
    prompt = template.replace("{path}", url).replace("{text}", read_text(url, max_bytes))
    if len(prompt) > MAX_PROMPT_CHARS:
        raise MapFailure(f"the prompt for {url} is {len(prompt):,} characters, over {MAX_PROMPT_CHARS:,}")
    return {"prompt": prompt}
