"""What a Ray task runs next to the data: read one object of a remote source, then run the map on it.

Imported on the cluster's workers (rlm-mcp installed there), so it depends on the standard library, fsspec
and the worker-side helpers only. Results are bounded here, before they travel back.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
from typing import Any

MAX_RESULT_CHARS = 100_000
MAX_PROMPT_CHARS = 2_000_000
DECOMPRESS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}


def read_text(url: str, max_bytes: int) -> str:
    import fsspec

    with fsspec.open(url, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"{url} holds more than the {max_bytes:,} bytes a map reads of one object")
    for suffix, decompress in DECOMPRESS.items():
        if url.endswith(suffix):
            data = decompress(data)
            break
    return data.decode("utf-8", "replace")


def run_function(url: str, code: str, name: str, max_bytes: int) -> dict[str, Any]:
    """Define the model's function from its source, call it on the object's text, bound what it returns."""
    from rlm_mcp.worker.helpers import HELPERS

    namespace: dict[str, Any] = {"__name__": "rlm_map", **HELPERS}
    exec(compile(code, f"<rlm_map {name}>", "exec"), namespace)  # model code: the cluster's rights, by design
    value = namespace[name](read_text(url, max_bytes), url)
    try:
        text = json.dumps(value)
        kept: Any = value
    except (TypeError, ValueError):
        text = kept = repr(value)
    if len(text) > MAX_RESULT_CHARS:
        raise ValueError(f"the result for {url} is {len(text):,} characters as JSON, over {MAX_RESULT_CHARS:,}")
    return {"value": kept}


def make_prompt(url: str, template: str, max_bytes: int) -> dict[str, Any]:
    """The template filled with the object's text ({text}) and its URL ({path})."""
    prompt = template.replace("{path}", url).replace("{text}", read_text(url, max_bytes))
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"the prompt for {url} is {len(prompt):,} characters, over {MAX_PROMPT_CHARS:,}")
    return {"prompt": prompt}
