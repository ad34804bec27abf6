"""One file into one REPL value, by what the file is: huge text mapped, data parsed, compression undone.

Runs in the worker (it reads the bytes; the server never holds them). Decisions by file name, since
content sniffing cannot tell JSON Lines from a log:
- `.gz`, `.bz2`, `.xz`: decompressed (streaming, capped at max_bytes of output), then judged by the inner
  name (`logs.jsonl.gz` is JSON Lines);
- `.json`: parsed; `.jsonl`/`.ndjson`: a list of parsed records; `.csv`/`.tsv`: a list of row dicts. Text
  that does not parse is still loaded, as `str`, and the note says where parsing failed;
- `.pdf`, `.docx`: text (a list of pages for PDF), with the optional extra `rlm-mcp[docs]`;
- any other file: `str`, or `MappedText` (memory-mapped, never decoded whole) from `mmap_bytes` up.

The optional document readers (the `docs` extra) are imported on use.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from rlm_mcp.worker.errors import FormatError
from rlm_mcp.worker.mapped import MappedText
from rlm_mcp.worker.reader import count_lines, decode, read_decompressed, read_limited, suffixes

DOCS_EXTRA = "pip install 'rlm-mcp[docs]'"


@dataclass
class Loaded:
    value: Any
    kind: str  # str | mapped | json | jsonl | csv | pdf | docx
    bytes: int
    chars: int
    lines: int
    replaced: int = 0
    notes: list[str] = field(default_factory=list)


def load_file(path: str, *, size: int, mmap_bytes: int, max_bytes: int) -> Loaded:
    compression, suffix = suffixes(path)
    if suffix == ".pdf" and not compression:
        return _pdf(path, size)
    if suffix == ".docx" and not compression:
        return _docx(path, size)
    if not compression and suffix not in (".json", ".jsonl", ".ndjson", ".csv", ".tsv"):
        if size >= mmap_bytes:
            text = MappedText(path)
            return Loaded(text, "mapped", size, len(text), count_lines(text))  # type: ignore[arg-type]
        if size > max_bytes:
            raise FormatError(f"the file is {size:,} bytes, over --max-file-bytes ({max_bytes:,})")
    if compression:
        data = read_decompressed(path, compression, max_bytes)
    else:
        with open(path, "rb") as handle:
            data = read_limited(handle, max_bytes, "the file")
    decoded = decode(data)
    text = decoded.text
    loaded = Loaded(text, "str", len(data), len(text), count_lines(text), decoded.replaced)
    if compression:
        loaded.notes.append(f"decompressed from {compression[1:]} ({size:,} bytes on disk)")
    parsers = {".json": _json, ".jsonl": _jsonl, ".ndjson": _jsonl, ".csv": _csv, ".tsv": _csv}
    parser = parsers.get(suffix)
    if parser is not None:
        parser(loaded, suffix)
    return loaded


def _json(loaded: Loaded, suffix: str) -> None:
    try:
        loaded.value = json.loads(loaded.value)
        loaded.kind = "json"
    except json.JSONDecodeError as exc:
        loaded.notes.append(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); loaded as text instead"
        )


def _jsonl(loaded: Loaded, suffix: str) -> None:
    records = []
    for number, line in enumerate(loaded.value.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            loaded.notes.append(
                f"line {number} is not valid JSON (column {exc.colno}: {exc.msg}); loaded as text instead"
            )
            return
    loaded.value = records
    loaded.kind = "jsonl"
    loaded.notes.append(f"{len(records):,} records (a list)")


def _csv(loaded: Loaded, suffix: str) -> None:
    delimiter = "\t" if suffix == ".tsv" else ","
    try:
        rows = list(csv.DictReader(io.StringIO(loaded.value, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        loaded.notes.append(f"not valid CSV ({exc}); loaded as text instead")
        return
    loaded.value = rows
    loaded.kind = "csv"
    columns = list(rows[0]) if rows else []
    loaded.notes.append(f"{len(rows):,} rows (a list of dicts), columns: {', '.join(map(str, columns[:20]))}")


def _pdf(path: str, size: int) -> Loaded:
    try:
        from pypdf import PdfReader  # type: ignore[import-not-found]
    except ImportError:
        raise FormatError(f"reading PDF needs the optional extra: {DOCS_EXTRA}") from None
    try:
        pages = [page.extract_text() or "" for page in PdfReader(path).pages]
    except Exception as exc:  # pypdf raises many types for damaged files
        raise FormatError(f"cannot read it as PDF: {type(exc).__name__}: {exc}") from None
    chars = sum(len(page) for page in pages)
    lines = sum(count_lines(page) for page in pages)
    notes = [f"{len(pages):,} pages (a list of str, one per page)"]
    if pages and not chars:
        notes.append("no text layer found (a scanned PDF?); OCR is not done")
    return Loaded(pages, "pdf", size, chars, lines, notes=notes)


def _docx(path: str, size: int) -> Loaded:
    try:
        import docx  # type: ignore[import-not-found]
    except ImportError:
        raise FormatError(f"reading DOCX needs the optional extra: {DOCS_EXTRA}") from None
    try:
        text = "\n".join(paragraph.text for paragraph in docx.Document(path).paragraphs)
    except Exception as exc:  # python-docx raises many types for damaged files
        raise FormatError(f"cannot read it as DOCX: {type(exc).__name__}: {exc}") from None
    return Loaded(text, "docx", size, len(text), count_lines(text))
