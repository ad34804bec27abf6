"""A huge UTF-8 file as a read-only, str-like value that is never decoded whole.

Why: decoding a 1 GB log into a `str` takes seconds and several GB of memory (Python stores non-ASCII text
at 2-4 bytes a character). Memory-mapped, the file's pages are the kernel's page cache, shared and free to
evict, and loading is an index build: about a second per GB, much less for ASCII.

Positions are characters, as for `str`: `len()`, indexes, slices and the results of `find` agree with
`str(text)` exactly. A sparse index keeps, for every block of BLOCK bytes, how many characters precede it
and whether the block is pure ASCII (where bytes and characters coincide); converting a position costs at
most one partial block scan. A character belongs to the block holding its first byte. Positions are exact
for valid UTF-8; in bytes that are not (decoded to U+FFFD), a stray continuation byte is not counted as a
character, so positions after it drift by one from `str(text)`.

"""

from __future__ import annotations

import bisect
import codecs
import mmap
import os
import re
from array import array
from collections.abc import Iterator, Sequence
from typing import Any

from rlm_mcp.units import MiB

BLOCK = 256 * 1024
CONTINUATION = bytes(range(0x80, 0xC0))
LINE_CHUNK = 16 * MiB


def count_chars(data: bytes) -> int:
    """Characters in a run of UTF-8 bytes: every byte that is not a continuation byte starts one."""
    return len(data) if data.isascii() else len(data.translate(None, CONTINUATION))


class MappedText:
    """A read-only text backed by a memory-mapped UTF-8 file. See the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        with open(self.path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self.nbytes = size
        self._starts = array("q")  # characters before each block
        self._ascii = bytearray()  # 1 if the block is pure ASCII
        total = newlines = 0
        for offset in range(0, size, BLOCK):
            block = self._bytes(offset, offset + BLOCK)
            newlines += block.count(b"\n")
            self._starts.append(total)
            is_ascii = block.isascii()
            self._ascii.append(is_ascii)
            total += len(block) if is_ascii else count_chars(block)
        self._length = total
        self._newlines = newlines
        self.is_ascii = all(self._ascii)

    # -- conversions between characters and bytes ----------------------------------------------------

    def _bytes(self, start: int, end: int) -> bytes:
        return self._map[start:end] if self._map is not None else b""

    def _char_of(self, byte: int) -> int:
        """Characters that start before byte offset `byte`."""
        byte = min(max(byte, 0), self.nbytes)
        if byte == self.nbytes:
            return self._length
        block = byte // BLOCK
        start = block * BLOCK
        if self._ascii[block]:
            return self._starts[block] + byte - start
        return self._starts[block] + count_chars(self._bytes(start, byte))

    def _byte_of(self, char: int) -> int:
        """Byte offset where character number `char` starts (the file's end for `char >= len`)."""
        if char <= 0:
            return 0
        if char >= self._length:
            return self.nbytes
        block = bisect.bisect_right(self._starts, char) - 1
        start = block * BLOCK
        wanted = char - self._starts[block]
        if self._ascii[block]:
            return start + wanted
        data = self._bytes(start, min(start + BLOCK, self.nbytes))
        lead = 0  # continuation bytes of the character the block before began
        while lead < min(len(data), 3) and 0x80 <= data[lead] < 0xC0:
            lead += 1
        try:  # valid UTF-8, the usual case: decoding the block and encoding the prefix are both in C
            text = codecs.getincrementaldecoder("utf-8")().decode(data[lead:], final=False)
        except UnicodeDecodeError:
            text = None
        if text is not None and wanted < len(text):
            return start + lead + len(text[:wanted].encode("utf-8"))
        low, high = 0, len(data)  # else: the first prefix holding wanted + 1 character starts, by bisection
        while low < high:
            middle = (low + high) // 2
            if count_chars(data[:middle]) >= wanted + 1:
                high = middle
            else:
                low = middle + 1
        return start + low - 1 if low else start

    def _span(self, start: int | None, end: int | None) -> tuple[int, int]:
        """Character bounds as str.find takes them (None, negatives, out of range) -> byte bounds."""
        first, last, _ = slice(start, end).indices(self._length)
        return self._byte_of(first), self._byte_of(max(first, last))

    # -- for helpers that work on the bytes (repl/helpers.py) ------------------------------------------

    @property
    def buffer(self) -> mmap.mmap | bytes:
        """The file's bytes, mapped (b"" for an empty file): for byte-level regex and searches."""
        return self._map if self._map is not None else b""

    def char_offset(self, byte: int) -> int:
        """The character position of byte offset `byte` (its start, if it falls inside a character)."""
        return self._char_of(byte)

    # -- the str-like surface --------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, key: int | slice) -> str:
        if isinstance(key, slice):
            first, last, step = key.indices(self._length)
            if step != 1:
                return self[first:last] if step > 0 else str(self)[key]
            if last <= first:
                return ""
            return self._decode(self._byte_of(first), self._byte_of(last))
        index = key + self._length if key < 0 else key
        if not 0 <= index < self._length:
            raise IndexError("MappedText index out of range")
        return self._decode(self._byte_of(index), self._byte_of(index + 1))

    def _decode(self, start: int, end: int) -> str:
        return self._bytes(start, end).decode("utf-8", "replace")

    def __str__(self) -> str:
        return self._decode(0, self.nbytes)

    def __repr__(self) -> str:
        return f"<MappedText {self.path!r}: {self._length:,} chars, {self.nbytes:,} bytes, memory-mapped>"

    def __contains__(self, sub: str) -> bool:
        return self.find(sub) >= 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MappedText):
            return self.path == other.path and self.nbytes == other.nbytes
        return isinstance(other, str) and len(other) == self._length and str(self) == other

    __hash__ = None  # type: ignore[assignment]

    def find(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        return self._search(sub, start, end, reverse=False)

    def rfind(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        return self._search(sub, start, end, reverse=True)

    def _search(self, sub: str, start: int | None, end: int | None, *, reverse: bool) -> int:
        low, high = self._span(start, end)
        if self._map is None:
            return 0 if sub == "" and low == 0 else -1
        method = self._map.rfind if reverse else self._map.find
        found = method(sub.encode("utf-8"), low, high)
        return -1 if found < 0 else self._char_of(found)

    def index(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        found = self.find(sub, start, end)
        if found < 0:
            raise ValueError("substring not found")
        return found

    def count(self, sub: str, start: int | None = None, end: int | None = None) -> int:
        low, high = self._span(start, end)
        if not sub:
            return self._char_of(high) - self._char_of(low) + 1
        needle = sub.encode("utf-8")
        if needle == b"\n" and (low, high) == (0, self.nbytes):
            return self._newlines  # counted while indexing: line counts are free
        if len(needle) == 1:  # e.g. newlines: count in big slices, C speed, no boundary to worry about
            return sum(self._bytes(at, min(at + LINE_CHUNK, high)).count(needle) for at in range(low, high, LINE_CHUNK))
        total, position = 0, low
        while self._map is not None:
            found = self._map.find(needle, position, high)
            if found < 0:
                break
            total += 1
            position = found + len(needle)
        return total

    def startswith(self, prefix: str) -> bool:
        return self._bytes(0, len(prefix.encode("utf-8"))) == prefix.encode("utf-8")

    def endswith(self, suffix: str) -> bool:
        encoded = suffix.encode("utf-8")
        return not encoded or self._bytes(self.nbytes - len(encoded), self.nbytes) == encoded

    def __iter__(self) -> Iterator[str]:
        """Lines, with their line endings, as iterating over an open text file gives them."""
        position = 0
        while position < self.nbytes:
            assert self._map is not None
            newline = self._map.find(b"\n", position)
            end = self.nbytes if newline < 0 else newline + 1
            yield self._decode(position, end)
            position = end

    def lines(self) -> Iterator[str]:
        """Lines without their line endings, like str.splitlines() on "\\n"-separated text."""
        for line in self:
            yield line.rstrip("\r\n") if line.endswith("\n") else line

    def finditer(self, pattern: str | re.Pattern[Any], flags: int = 0) -> Iterator[tuple[int, int, str]]:
        """(start, end, matched text) in characters, for every match of `pattern` in the whole file.

        The pattern runs over the bytes (re's bytes mode), so character classes are ASCII-only: \\w, \\d and
        case-insensitivity do not extend to non-ASCII letters; literal non-ASCII text matches as usual.
        """
        if self._map is None:
            return
        compiled = bytes_pattern(pattern, flags)
        for match in compiled.finditer(self._map):
            start = match.start()
            char_start = self._char_of(start)
            text = match.group().decode("utf-8", "replace")
            yield char_start, char_start + len(text), text

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None


def bytes_pattern(pattern: str | re.Pattern[Any], flags: int = 0) -> re.Pattern[bytes]:
    """A str regex (or compiled pattern) as the same regex over UTF-8 bytes."""
    if isinstance(pattern, re.Pattern):
        if isinstance(pattern.pattern, bytes):
            return pattern
        flags |= pattern.flags & ~re.UNICODE
        pattern = pattern.pattern
    return re.compile(pattern.encode("utf-8"), flags & ~re.UNICODE)


class MappedChunks(Sequence[str]):
    """The pieces chunk() cuts a MappedText into, each decoded when it is read.

    Why: decoding a gigabyte into a list of str takes seconds and holds the whole text in memory (up to
    4 bytes a character); the model's code usually reads each piece once, into a prompt. A piece is a
    `str` as soon as it is taken (by index, or iterating); `list(chunks)` decodes them all. Pieces are
    windows of `width` characters starting every `step`, the last one ending with the text, exactly as
    chunk() cuts a `str`; snapshots keep the file's path and the windows, not the text.
    """

    def __init__(self, text: MappedText, width: int, step: int) -> None:
        self.text, self.width, self.step = text, width, step
        length = len(text)
        self._count = 0 if length == 0 else 1 + max(0, -(-(length - width) // step))

    def __len__(self) -> int:
        return self._count

    def _piece(self, index: int) -> str:
        start = index * self.step
        return self.text[start : start + self.width] if index < self._count - 1 else self.text[start:]

    def __getitem__(self, key: int | slice) -> Any:
        if isinstance(key, slice):
            return [self._piece(index) for index in range(*key.indices(self._count))]
        index = key + self._count if key < 0 else key
        if not 0 <= index < self._count:
            raise IndexError("chunk index out of range")
        return self._piece(index)

    def __iter__(self) -> Iterator[str]:
        for index in range(self._count):
            yield self._piece(index)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MappedChunks):
            return (other.text.path, other.width, other.step) == (self.text.path, self.width, self.step)
        if not isinstance(other, list) or len(other) != self._count:
            return False
        return all(mine == theirs for mine, theirs in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # compares by content, like the list it stands for

    def __add__(self, other: Any) -> list[Any]:
        return [*self, *other]

    def __radd__(self, other: Any) -> list[Any]:
        return [*other, *self]

    def __repr__(self) -> str:
        return (
            f"<{self._count:,} chunks of {self.width:,} characters of {self.text.path!r}, each decoded when read "
            "(a str then; list(chunks) decodes them all)>"
        )

    def __reduce__(self) -> Any:
        return (_remapped_chunks, (self.text.path, self.width, self.step))


def _remapped_chunks(path: str, width: int, step: int) -> MappedChunks:
    return MappedChunks(MappedText(path), width, step)
