"""Turning files into text inside the worker.

The worker, not the server, reads context files: the bytes then live only in the process that uses them,
and the server stays small whatever the user loads.

The bottom of the worker's file reading: bytes to text (UTF-8, the replacements counted), decompression
within a cap, and sets of small files. formats.py builds on it for single files judged by their name; it
imports nothing back, so the two read from here up.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib
from dataclasses import dataclass, field
from typing import Any

from rlm_mcp.units import MiB
from rlm_mcp.worker.errors import FormatError

SNIFF_BYTES = 8192
REPLACEMENT = "\ufffd"
DECOMPRESSORS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
READ_CHUNK = MiB


@dataclass
class Decoded:
    text: str
    replaced: int  # U+FFFD characters that decoding inserted


def decode(data: bytes) -> Decoded:
    """UTF-8 (with or without BOM); bytes that are not valid UTF-8 become U+FFFD and are counted."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return Decoded(data.decode("utf-8"), 0)
    except UnicodeDecodeError:
        text = data.decode("utf-8", "replace")
        already = data.count(REPLACEMENT.encode("utf-8"))
        return Decoded(text, text.count(REPLACEMENT) - already)


def looks_binary(head: bytes) -> bool:
    """A NUL byte in the first block: how git and grep tell binary files from text."""
    return b"\x00" in head[:SNIFF_BYTES]


def count_lines(text: str) -> int:
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def suffixes(name: str) -> tuple[str, str]:
    """(compression suffix or "", format suffix), lower-cased: "a.JSONL.gz" -> (".gz", ".jsonl")."""
    lowered = name.lower()
    compression = next((suffix for suffix in DECOMPRESSORS if lowered.endswith(suffix)), "")
    inner = lowered[: len(lowered) - len(compression)]
    dot = inner.rfind(".")
    return compression, inner[dot:] if dot > inner.rfind("/") else ""


def read_limited(handle: Any, max_bytes: int, what: str) -> bytes:
    buffer = bytearray()
    while chunk := handle.read(READ_CHUNK):
        buffer += chunk
        if len(buffer) > max_bytes:
            raise FormatError(
                f"{what} holds more than {max_bytes:,} bytes; raise --max-file-bytes (RLM_MCP_MAX_FILE_BYTES) "
                "or load a part of it"
            )
    return bytes(buffer)


def compression_of(name: str) -> str:
    """ ".gz", ".bz2", ".xz" or "" for a file name."""
    return suffixes(name)[0]


def read_decompressed(path: str, compression: str, max_bytes: int) -> bytes:
    """The decompressed bytes of a file, at most `max_bytes` of them (FormatError beyond, or if corrupt)."""
    try:
        with DECOMPRESSORS[compression](path, "rb") as handle:
            return read_limited(handle, max_bytes, "decompressed, the file")
    except (OSError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise FormatError(f"cannot decompress it as {compression[1:]}: {exc}") from None


@dataclass
class FileSet:
    files: dict[str, str] = field(default_factory=dict)
    binary: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    too_large: list[str] = field(default_factory=list)  # compressed members too large once decompressed
    with_replacements: list[str] = field(default_factory=list)
    replaced: int = 0


def read_file_set(root: str, relative_paths: list[str], max_file_bytes: int, max_total_bytes: int) -> FileSet:
    """Read many small text files; binary and unreadable ones are listed, not loaded. A .gz, .bz2 or .xz
    member is decompressed, as a single-file load does, within `max_file_bytes` each and `max_total_bytes`
    in all (the on-disk caps the server checked say nothing of what a member holds once decompressed)."""
    result = FileSet()
    total = 0
    for rel in relative_paths:
        path = os.path.join(root, rel)
        compression = compression_of(rel)
        try:
            if compression:
                data = read_decompressed(path, compression, min(max_file_bytes, max_total_bytes - total))
            else:
                with open(path, "rb") as handle:
                    data = handle.read(max_file_bytes + 1)[:max_file_bytes]
        except FormatError as exc:
            (result.too_large if "holds more than" in str(exc) else result.unreadable).append(rel)
            continue
        except OSError:
            result.unreadable.append(rel)
            continue
        if looks_binary(data):
            result.binary.append(rel)
            continue
        total += len(data)
        decoded = decode(data)
        if decoded.replaced:
            result.with_replacements.append(rel)
            result.replaced += decoded.replaced
        result.files[rel] = decoded.text
    return result
