"""Turning files into text inside the worker.

The worker, not the server, reads context files: the bytes then live only in the process that uses them,
and the server stays small whatever the user loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SNIFF_BYTES = 8192
REPLACEMENT = "\ufffd"


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
    import os

    from rlm_mcp.worker.formats import FormatError, compression_of, read_decompressed

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
