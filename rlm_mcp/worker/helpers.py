"""Helpers the model calls inside the REPL to work on texts too big to read: look, find, cut, rank.

Why: a context may be a 1 GB log or a whole codebase. The model cannot print it; it needs a few exact,
cheap tools that return small plain values (str, int, list, dict) it can print, slice and pass to
llm_query. Every helper takes the same three kinds of input, so code written for a small test string
runs unchanged on the real context:

- a `str`;
- a `MappedText` (repl/mapped.py): a memory-mapped UTF-8 file. Helpers never decode it whole; they read
  it in windows of bytes and run regexes over the bytes (re's bytes mode), so on a MappedText `\\w`, `\\d`,
  `\\s` and IGNORECASE are ASCII-only, while literal non-ASCII text matches as usual;
- a mapping of file name -> text (a loaded file set): results carry the file name.

Positions are characters, and answers on a `str` and on a MappedText of the same text are identical.
A line ends at "\\n"; a line's text drops that "\\n" and one "\\r" before it.

"""

from __future__ import annotations

import bisect
import heapq
import inspect
import itertools
import math
import re
import sys
from array import array
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from rlm_mcp.units import CHARS_PER_TOKEN, MiB
from rlm_mcp.worker.mapped import MappedChunks, MappedText, bytes_pattern, count_chars

Text = str | MappedText
Source = str | MappedText | Mapping[str, str | MappedText]

PIECE_BYTES = 8 * MiB  # how much of a MappedText is decoded at a time
COUNT_BYTES = 16 * MiB  # how much of a MappedText is copied at a time to count newlines
LINE_CAP = 2000  # grep shows at most this many characters of one line
LISTED_FILES = 50  # peek lists at most this many files of a mapping
SEARCH_CACHE_SIZE = 2
K1, B = 1.5, 0.75

SPLIT_PRESETS = {
    "markdown": r"#{1,6}[ \t]",
    "python": r"(?:(?P<decorator>@)|(?:async[ \t]+)?def[ \t]|class[ \t])",
    "chapters": (
        r"[ \t]*(?:CHAPTER|Chapter)[ \t]+(?:\d+|[IVXLCDM]+|[ivxlcdm]+|(?i:one|two|three|four|five|six|seven|"
        r"eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty))\b"
    ),
}
GLOBAL_FLAGS = re.compile(r"\A(?:\(\?[aiLmsux]+\))+")  # (?i) and the like: must stay in front


# -- the one place that reaches into MappedText -------------------------------------------------------


class _Buffer:
    """A text as the operations grep and split need, over a str or over a MappedText's bytes.

    Offsets are in the buffer's own units (characters of a str, bytes of a MappedText); `char_of`
    turns them into character positions. `wide` is the most units one character takes.
    """

    def __init__(self, text: Text) -> None:
        self.text = text
        if isinstance(text, MappedText):
            # The bytes directly: a position then costs one partial block, not a decode from the start.
            self.data: Any = text.buffer
            self.nl: Any = b"\n"
            self.cr: Any = b"\r"
            self.size = text.nbytes
            self.wide = 4
            self.char_of: Callable[[int], int] = text.char_offset
        else:
            self.data, self.nl, self.cr, self.size, self.wide = text, "\n", "\r", len(text), 1
            self.char_of = int

    def decode(self, start: int, end: int) -> str:
        if self.wide == 1:
            return self.data[start:end]
        return self.data[start:end].decode("utf-8", "replace")

    def newlines(self, start: int, end: int) -> int:
        if self.wide == 1:
            return self.data.count("\n", start, end)
        return sum(self.data[i : min(i + COUNT_BYTES, end)].count(b"\n") for i in range(start, end, COUNT_BYTES))

    def longer_than(self, start: int, end: int, chars: int) -> bool:
        """Whether [start, end) holds more than `chars` characters, reading at most 4 * chars bytes."""
        if end - start <= chars:
            return False
        return self.wide == 1 or end - start > self.wide * chars or count_chars(self.data[start:end]) > chars

    def line_end(self, start: int) -> int:
        """Where the line holding `start` ends: its "\\n", or the end of the text."""
        found = self.data.find(self.nl, start)
        return self.size if found < 0 else found

    def content_end(self, start: int, end: int) -> int:
        """`end` less one "\\r" just before it."""
        return end - 1 if end > start and self.data[end - 1 : end] == self.cr else end

    def head(self, start: int, end: int, chars: int) -> str:
        """The first `chars` characters of [start, end)."""
        return self.decode(start, min(end, start + self.wide * chars))[:chars]

    def tail(self, start: int, end: int, chars: int) -> str:
        """The last `chars` characters of [start, end); a character cut at the window's edge falls outside."""
        return self.decode(max(start, end - self.wide * chars), end)[-chars:] if chars else ""


def _pieces(text: Text) -> Iterator[str]:
    """The text in order, as str pieces of at most PIECE_BYTES bytes, cut between characters."""
    if not isinstance(text, MappedText):
        if text:
            yield text
        return
    buffer = _Buffer(text)
    data, size, start = buffer.data, buffer.size, 0
    while start < size:
        end = min(size, start + PIECE_BYTES)
        while start < end < size and data[end] & 0xC0 == 0x80:  # a continuation byte: back off to its start
            end -= 1
        if end == start:  # pragma: no cover - only for invalid UTF-8 longer than a piece
            end = min(size, start + PIECE_BYTES)
        yield buffer.decode(start, end)
        start = end


def _files(x: Any, helper: str) -> list[tuple[str | None, Text]]:
    """(name, text) pairs: one unnamed text, or a mapping's files in its order."""
    if isinstance(x, (str, MappedText)):
        return [(None, x)]
    if isinstance(x, Mapping):
        for name, value in x.items():
            if not isinstance(value, (str, MappedText)):
                raise TypeError(
                    f"{helper}: the value for {name!r} is a {type(value).__name__}, not text; "
                    "pass a str, a MappedText or a dict of name -> text"
                )
        return list(x.items())
    raise TypeError(
        f"{helper} takes a str, a MappedText or a dict of name -> text, not {type(x).__name__}"
        + ("; join a list first, e.g. '\\n'.join(items)" if isinstance(x, (list, tuple)) else "")
    )


def _regex(pattern: str | re.Pattern[Any], flags: int, text: Text) -> re.Pattern[Any]:
    """`pattern` with re.MULTILINE, over bytes for a MappedText."""
    if isinstance(text, MappedText):
        return bytes_pattern(pattern, flags | re.MULTILINE)
    if isinstance(pattern, re.Pattern):
        if isinstance(pattern.pattern, bytes):
            raise TypeError("use a str pattern, not a bytes pattern")
        flags |= pattern.flags
        pattern = pattern.pattern
    return re.compile(pattern, flags | re.MULTILINE)


# -- peek ---------------------------------------------------------------------------------------------


def peek(x: Source, start: int = 0, n: int = 2000) -> str:
    """The n characters from start (negative start: from the end); a dict: its file list, then its first file.

    For a dict of files the answer lists up to 50 names with their lengths, then `start`/`n` apply to
    the first file; peek(files[name]) shows any other.
    """
    if n < 0:
        raise ValueError(f"peek: n is how many characters to show and cannot be negative (got {n})")
    files = _files(x, "peek")
    if files and files[0][0] is None:
        return _peek_text(files[0][1], start, n)
    total = sum(len(text) for _, text in files)
    lines = [f"{len(files):,} files, {total:,} chars:"]
    lines += [f"  {name}  {len(text):,} chars" for name, text in files[:LISTED_FILES]]
    if len(files) > LISTED_FILES:
        lines.append(f"  ... and {len(files) - LISTED_FILES:,} more (list(x) has them all)")
    if files:
        name, text = files[0]
        first = max(0, len(text) + start) if start < 0 else start
        lines.append(f"--- {name} [{first:,}:{min(first + n, len(text)):,}] ---")
        lines.append(_peek_text(text, start, n))
    return "\n".join(lines)


def _peek_text(text: Text, start: int, n: int) -> str:
    first = max(0, len(text) + start) if start < 0 else start
    return text[first : first + n]


# -- grep ---------------------------------------------------------------------------------------------


class Hits(list):  # type: ignore[type-arg]
    """grep's hits, a list, and how many there were in all: `total` matching lines, `complete` False when the
    list stopped at max_hits (len() of the list is then not the count)."""

    total: int = 0
    complete: bool = True


def grep(
    pattern: str | re.Pattern[str],
    x: Source,
    context_lines: int = 0,
    max_hits: int = 100,
    flags: int = 0,
    count: bool = False,
) -> Hits | int:
    """Regex hits, one per line: [{"line", "text", "start"}] (+ "file", "before"/"after" lines).

    `line` is 1-based, `text` the line, `start` the character offset of the first match in the text (in
    its file for a dict). Matching is per line: a line is a hit if the pattern matches within it (^ and $ are
    its ends; a match may not run into the next line). Lines over 2,000 characters are cut to 1,000 either
    side of the match ("clipped": True); context lines to their first 2,000. At most max_hits are returned,
    but all are counted: `.total`, `.complete`, and a note on stderr when the list stopped short.
    count=True returns just the number of matching lines.
    """
    if context_lines < 0:
        raise ValueError(f"grep: context_lines must be 0 or more (got {context_lines})")
    if max_hits <= 0:
        raise ValueError(f"grep: max_hits must be at least 1 (got {max_hits})")
    hits, total = Hits(), 0
    for name, text in _files(x, "grep"):
        room = 0 if count else max_hits - len(hits)
        found, matched = _grep_text(_regex(pattern, flags, text), _Buffer(text), context_lines, room, name)
        hits += found
        total += matched
    if count:
        return total
    hits.total, hits.complete = total, total == len(hits)
    if not hits.complete:
        print(
            f"grep: returned {len(hits):,} of {total:,} matching lines (max_hits={max_hits}); "
            "its .total says how many, grep(..., count=True) only counts, a larger max_hits returns more",
            file=sys.stderr,
        )
    return hits


def _grep_text(
    regex: re.Pattern[Any], buffer: _Buffer, context_lines: int, max_hits: int, name: str | None
) -> tuple[list[dict[str, Any]], int]:
    """Up to `max_hits` hits, and the number of matching lines in all."""
    data, size, half = buffer.data, buffer.size, LINE_CAP // 2
    hits: list[dict[str, Any]] = []
    total = 0
    line, counted = 1, 0  # the line number at offset `counted`
    position = 0
    while position <= size:
        match = regex.search(data, position)
        if match is None:
            break
        found = match.start()
        if found == size and (size == 0 or data[size - 1 : size] == buffer.nl):
            break  # an empty match after the last line ending is not on a line
        begin = data.rfind(buffer.nl, 0, found) + 1
        end = buffer.line_end(found)
        if match.end() > end:  # it ran into the next line: look again within this line only
            match = regex.search(data, found, end)
            if match is None:
                position = end + 1
                continue
            found = match.start()
        total += 1
        position = end + 1
        if len(hits) >= max_hits:
            continue
        line += buffer.newlines(counted, begin)
        counted = begin
        content = buffer.content_end(begin, end)
        hit: dict[str, Any] = {} if name is None else {"file": name}
        hit["line"] = line
        if buffer.longer_than(begin, content, LINE_CAP):
            found_in_line = min(found, content)
            hit["text"] = buffer.tail(begin, found_in_line, half) + buffer.head(found_in_line, content, half)
            hit["clipped"] = True
        else:
            hit["text"] = buffer.decode(begin, content)
        hit["start"] = buffer.char_of(found)
        if context_lines:
            hit["before"] = _lines_before(buffer, begin, context_lines)
            hit["after"] = _lines_after(buffer, end, context_lines)
        hits.append(hit)
    return hits, total


def _lines_before(buffer: _Buffer, begin: int, count: int) -> list[str]:
    lines: list[str] = []
    while begin > 0 and len(lines) < count:
        end = begin - 1  # the "\n" that ends the previous line
        begin = buffer.data.rfind(buffer.nl, 0, end) + 1
        lines.append(buffer.head(begin, buffer.content_end(begin, end), LINE_CAP))
    return lines[::-1]


def _lines_after(buffer: _Buffer, end: int, count: int) -> list[str]:
    lines: list[str] = []
    while end + 1 < buffer.size and len(lines) < count:
        begin = end + 1
        end = buffer.line_end(begin)
        lines.append(buffer.head(begin, buffer.content_end(begin, end), LINE_CAP))
    return lines


# -- chunk --------------------------------------------------------------------------------------------


def chunk(x: Source, size: int, overlap: int = 0, by: str = "chars") -> list[str] | MappedChunks:
    """Cut into pieces of `size` chars, lines or tokens (~4 chars); neighbours share `overlap` units.

    by="chars": windows of size characters, each starting size - overlap after the last.
    by="lines": size lines each, with their line endings; overlap lines repeat.
    by="tokens": up to size * 4 characters, cut after the last newline (else space or tab) in the window's
    final tenth when there is one; overlap * 4 characters repeat.
    With overlap=0, "".join(chunks) == x. A dict gives one list: each file's chunks, each chunk prefixed
    with "### name\\n" (the header is not counted in size). A MappedText cut by="chars" gives MappedChunks:
    the same pieces, each decoded when read.
    """
    _check_chunking(size, overlap, by, "chunk", "size")
    if isinstance(x, MappedText) and by == "chars":
        return MappedChunks(x, size, size - overlap)
    chunks: list[str] = []
    for name, text in _files(x, "chunk"):
        pieces = _chunks(text, size, overlap, by)
        chunks += pieces if name is None else [f"### {name}\n{piece}" for piece in pieces]
    return chunks


def _check_chunking(size: int, overlap: int, by: str, helper: str, size_name: str) -> None:
    if by not in ("chars", "lines", "tokens"):
        raise ValueError(f'{helper}: by must be "chars", "lines" or "tokens", not {by!r}')
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"{helper}: {size_name} must be a whole number of {by} above 0, e.g. 2000 (got {size!r})")
    if not isinstance(overlap, int) or not 0 <= overlap < size:
        raise ValueError(
            f"{helper}: overlap must be at least 0 and below {size_name} ({size}), e.g. overlap={size // 10} "
            f"(got {overlap!r})"
        )


def _chunks(text: Text, size: int, overlap: int, by: str) -> list[str]:
    if by == "lines":
        return list(_line_chunks(text, size, overlap))
    scale = CHARS_PER_TOKEN if by == "tokens" else 1
    return list(_char_chunks(text, size * scale, overlap * scale, soft=by == "tokens"))


def _char_chunks(text: Text, width: int, overlap: int, soft: bool) -> Iterator[str]:
    """Windows of `width` characters, `overlap` shared; soft: end after a newline or blank near the end."""
    buffer, i = "", 0  # the next window starts at buffer[i]
    pending: list[str] = []  # pieces read but not yet joined: joining only past a window keeps this linear
    held = 0
    for last, piece in _flagged(_pieces(text)):
        pending.append(piece)
        held += len(piece)
        if len(buffer) - i + held <= width and not last:
            continue
        buffer, i, pending, held = "".join([buffer[i:], *pending]), 0, [], 0
        while len(buffer) - i > width:  # more text follows this window
            end = i + width
            if soft:
                low = end - width // 10
                cut = buffer.rfind("\n", low, end)
                if cut < 0:
                    cut = max(buffer.rfind(" ", low, end), buffer.rfind("\t", low, end))
                if cut >= 0:
                    end = cut + 1
            yield buffer[i:end]
            i = max(end - overlap, i + 1)
    if len(buffer) > i:
        yield buffer[i:]


def _line_chunks(text: Text, size: int, overlap: int) -> Iterator[str]:
    """Groups of `size` lines (with their endings), `overlap` lines shared."""
    lines: list[str] = []
    i, step = 0, size - overlap  # the next group starts at lines[i]
    unfinished: list[str] = []  # the pieces of a line whose end is not read yet
    for last, piece in _flagged(_pieces(text)):
        parts = piece.split("\n")
        unfinished.append(parts.pop())
        if parts:
            parts[0] = "".join([*unfinished[:-1], parts[0]])
            unfinished = unfinished[-1:]
            lines = lines[i:] + [part + "\n" for part in parts]
            i = 0
        if last and "".join(unfinished):
            lines = [*lines[i:], "".join(unfinished)]
            i = 0
        while len(lines) - i > size:  # more lines follow this group
            yield "".join(lines[i : i + size])
            i += step
    if len(lines) > i:
        yield "".join(lines[i:])


def _flagged(pieces: Iterator[str]) -> Iterator[tuple[bool, str]]:
    """(is_last, piece) for each piece."""
    previous: str | None = None
    for piece in pieces:
        if previous is not None:
            yield False, previous
        previous = piece
    if previous is not None:
        yield True, previous


# -- split --------------------------------------------------------------------------------------------


def split(x: Source, pattern: str | re.Pattern[str]) -> list[str]:
    """Pieces that start at lines matching `pattern`; or pattern "markdown", "python", "chapters".

    The pattern is tried at every line start; each piece keeps its heading line, and text before the
    first heading is a piece of its own. "markdown": "# " to "###### " headings; "python": top-level def,
    async def and class, with their decorators; "chapters": lines like "Chapter 12", "CHAPTER XII",
    "Chapter One". A dict gives one list, each piece prefixed with "### name\\n".
    """
    if isinstance(pattern, str) and pattern in SPLIT_PRESETS:
        pattern = SPLIT_PRESETS[pattern]
    if isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, bytes):
        raise TypeError("split: use a str pattern, not a bytes pattern")
    compiled = re.compile(pattern)
    body = GLOBAL_FLAGS.sub("", compiled.pattern)  # inline (?i) and the like, kept in compiled.flags
    anchored = re.compile(f"^(?:{body})", compiled.flags & ~re.UNICODE)
    pieces: list[str] = []
    for name, text in _files(x, "split"):
        found = _split_text(_regex(anchored, 0, text), _Buffer(text))
        pieces += found if name is None else [f"### {name}\n{piece}" for piece in found]
    return pieces


def _split_text(regex: re.Pattern[Any], buffer: _Buffer) -> list[str]:
    cuts: list[int] = []
    attached = False  # the last cut was a decorator: the def or class under it stays with it
    decorators = "decorator" in regex.groupindex
    for match in regex.finditer(buffer.data):
        if match.start() == buffer.size and buffer.size:
            break  # an empty match at the very end cuts nothing
        if not attached:
            cuts.append(match.start())
        attached = decorators and match.group("decorator") is not None
    bounds = [0, *[cut for cut in cuts if cut > 0], buffer.size]
    return [buffer.decode(start, end) for start, end in itertools.pairwise(bounds) if end > start]


# -- search -------------------------------------------------------------------------------------------

WORD = re.compile(r"\w+")
# Bytes as search sees them: ASCII letters lowered, ASCII digits, "_" and every non-ASCII byte kept (so a
# UTF-8 word stays whole), everything else a space; then a whole word `w` is exactly b" w " in the result.
_SEARCH_BYTES = bytes(
    (b + 32 if 65 <= b <= 90 else b) if chr(b).isalnum() or b == 0x5F or b >= 0x80 else 0x20 for b in range(256)
)
# Non-ASCII punctuation and spaces common in prose, as UTF-8: spaces too in a str, so that “Hello” and
# "naïve—café" hold the words hello, naïve and café (each byte becomes a space: positions do not move).
# Not in a MappedText: looking for them costs a pass each over gigabytes, and there words are runs of ASCII
# word characters and non-ASCII bytes, as its regexes' \w is ASCII.
_PUNCTUATION = tuple(
    char.encode() for char in "\u00a0\u00ab\u00bb\u2013\u2014\u2018\u2019\u201c\u201d\u2022\u2026\u2009\u202f"
)
SCAN_WINDOW_BYTES = 4 * MiB  # translated a window at a time: small enough to stay in the CPU's cache for each word
KEEP_TRANSLATED_BYTES = 64 * MiB  # inputs up to this size keep their translated bytes for later queries
MAX_CACHED_TERMS = 256


class _Scanner:
    """BM25 over the chunks of one input, found by scanning rather than by an index.

    A query's new words are looked for in one pass over the text's bytes, a window at a time (translated
    once per window, then searched for every word at memchr speed); what each word was found in is kept,
    so later queries with the same words cost nothing. Chunks are `chunk_size` bytes of UTF-8 (characters,
    for ASCII text), per file for a dict; a chunk's length, for BM25's normalization, is its size.
    """

    def __init__(self, x: Source, chunk_size: int) -> None:
        self.source = x  # keeps id(x) from being reused while the entry lives
        self.fingerprint = _fingerprint(x)
        self.chunk_size = chunk_size
        self.files = _files(x, "search")
        self.sizes = [_byte_size(text) for _, text in self.files]
        self.first: list[int] = []  # the index of each file's first chunk
        self.short: dict[int, int] = {}  # chunk -> its size, for each file's last chunk if it is shorter
        total = 0
        for size in self.sizes:
            self.first.append(total)
            total += -(-size // chunk_size)
            if size % chunk_size:
                self.short[total - 1] = size % chunk_size
        self.chunks = total
        self.average = sum(self.sizes) / total if total else 0.0
        self.translated: list[bytes] | None = None
        if sum(self.sizes) <= KEEP_TRANSLATED_BYTES and not any(isinstance(t, MappedText) for _, t in self.files):
            self.translated = [_spaced(_utf8(text).translate(_SEARCH_BYTES)) for _, text in self.files]
        self.postings: dict[bytes, tuple[array[int], array[int]]] = {}  # word -> (chunks, frequencies)

    def postings_of(self, words: list[bytes]) -> list[tuple[array[int], array[int]]]:
        missing = [word for word in words if word not in self.postings]
        if missing:
            if len(self.postings) + len(missing) > MAX_CACHED_TERMS:
                self.postings.clear()
            self.postings.update(self._scan(missing))
        return [self.postings[word] for word in words]

    def _scan(self, words: list[bytes]) -> dict[bytes, tuple[array[int], array[int]]]:
        found = {word: (array("I"), array("I")) for word in words}
        size = self.chunk_size
        window = max(size, SCAN_WINDOW_BYTES // size * size)  # whole chunks: none straddles two windows
        for number, (_, text) in enumerate(self.files):
            first, length = self.first[number], self.sizes[number]
            data: Any = None
            if self.translated is not None:
                translated = self.translated[number]
            else:
                data = text.buffer if isinstance(text, MappedText) else _utf8(text)
            for start in range(0, length, window):
                end = min(start + window, length)
                if self.translated is not None:
                    view = b" " + translated[start : end + 1] if start == 0 else translated[start - 1 : end + 1]
                else:  # one byte either side, for the boundary of a word at the window's edge
                    raw = data[start - 1 if start else 0 : end + 1]
                    view = ((b"" if start else b" ") + raw).translate(_SEARCH_BYTES)
                    if not isinstance(text, MappedText):  # see _PUNCTUATION: a mapped text's words are ASCII ones
                        view = _spaced(view)
                if end == length:
                    view += b" "
                for word in words:
                    _count_in(view, word, start, end, first, size, found[word])
        return found

    def chunk_span(self, chunk: int) -> tuple[int, int, int]:
        """(file, first byte, end byte) of a chunk."""
        file = bisect.bisect_right(self.first, chunk) - 1
        while self.sizes[file] == 0 or chunk - self.first[file] >= -(-self.sizes[file] // self.chunk_size):
            file += 1  # files of no bytes have no chunks
        begin = (chunk - self.first[file]) * self.chunk_size
        return file, begin, min(begin + self.chunk_size, self.sizes[file])


def _count_in(
    view: bytes, word: bytes, start: int, end: int, first: int, size: int, into: tuple[array[int], array[int]]
) -> None:
    """Add the chunks of bytes [start, end) that hold `word` (as a whole word, not cut by a chunk's edge),
    with how often, to `into`. `view` is those bytes translated, with the byte before and after them.

    Few hits are found one by one; a word in nearly every chunk is counted chunk by chunk instead, so
    either way the work is bounded by the window's number of chunks."""
    pattern = b" " + word + b" "
    chunks, frequencies = into
    budget = -(-(end - start) // size)
    hits: list[int] = []
    at = view.find(pattern)
    while at >= 0 and len(hits) <= budget:
        hits.append(at)
        at = view.find(pattern, at + len(pattern) - 1)
    if at < 0:
        last = -1
        for hit in hits:
            begin = start + hit  # the word's first byte
            chunk = begin // size
            if chunk != (begin + len(word) - 1) // size:
                continue  # cut by the chunk's edge
            if chunk == last:
                frequencies[-1] += 1
            else:
                chunks.append(first + chunk)
                frequencies.append(1)
                last = chunk
        return
    # bytes.count skips a hit whose leading space ended the one before ("ok ok"). In a run of k repeats
    # it finds ceil(k/2) of " w " and floor(k/2) of " w w " for k < 4; a chunk with a longer run (" w w w "
    # in it) is counted exactly, with a lookahead regex.
    count, twice, thrice = view.count, pattern + word + b" ", pattern + word + b" " + word + b" "
    finder = re.compile(re.escape(b" " + word) + b"(?= )")
    for chunk_start in range(start, end, size):
        low, high = chunk_start - start, min(chunk_start + size, end) - start + 2
        hits = count(pattern, low, high)
        if hits:
            repeats = count(twice, low, high)
            if repeats and count(thrice, low, high):
                hits, repeats = len(finder.findall(view, low, high)), 0
            chunks.append(first + chunk_start // size)
            frequencies.append(hits + repeats)


def _spaced(view: bytes) -> bytes:
    """`view` with the common non-ASCII punctuation made spaces (ASCII text: as it is, at once)."""
    if view.isascii():
        return view
    for mark in _PUNCTUATION:
        if mark in view:
            view = view.replace(mark, b" " * len(mark))
    return view


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _byte_size(text: Text) -> int:
    if isinstance(text, MappedText):
        return text.nbytes
    return len(text) if text.isascii() else len(_utf8(text))


def _fingerprint(x: Source) -> tuple[Any, ...]:
    if isinstance(x, Mapping):
        return tuple((name, id(text), len(text)) for name, text in x.items())
    return (len(x),)


_SEARCH_CACHE: dict[tuple[int, int], _Scanner] = {}


def _scanner(x: Source, chunk_size: int) -> _Scanner:
    key = (id(x), chunk_size)
    cached = _SEARCH_CACHE.get(key)
    if cached is not None and cached.source is x and cached.fingerprint == _fingerprint(x):
        return cached
    scanner = _Scanner(x, chunk_size)
    _SEARCH_CACHE.pop(key, None)
    while len(_SEARCH_CACHE) >= SEARCH_CACHE_SIZE:
        del _SEARCH_CACHE[next(iter(_SEARCH_CACHE))]
    _SEARCH_CACHE[key] = scanner
    return scanner


def search(query: str, x: Source, k: int = 10, chunk_size: int = 2000) -> list[dict[str, Any]]:
    """BM25-ranked chunks for the query's words: [{"score", "start", "text"}] (+ "file"), best first.

    x is cut into chunks of chunk_size characters (bytes of UTF-8 where the text is not ASCII; per file for
    a dict); a word is a run of letters, digits and _, matched without regard to ASCII case. Only chunks
    holding a query word are returned. No index is built: each new word costs one scan (about 0.5 s a GB),
    and the words already looked for in the last 2 inputs are remembered.
    """
    if not isinstance(query, str):
        raise TypeError(f"search: the query comes first and must be a str, not {type(query).__name__}")
    if k <= 0:
        raise ValueError(f"search: k is how many chunks to return and must be at least 1 (got {k})")
    if not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"search: chunk_size must be a whole number of characters above 0 (got {chunk_size!r})")
    # ASCII case is folded on both sides alike (the text's non-ASCII letters keep their case, so the query's do).
    words = sorted({_utf8(term).translate(_SEARCH_BYTES) for term in WORD.findall(query)})
    if not words:
        raise ValueError(f"search: the query has no words to look for (got {query!r}); pass e.g. 'error timeout'")
    scanner = _scanner(x, chunk_size)
    total = scanner.chunks
    scores: dict[int, float] = {}
    for chunks, frequencies in scanner.postings_of(words):
        idf = math.log((total - len(chunks) + 0.5) / (len(chunks) + 0.5) + 1)
        short, average = scanner.short, scanner.average
        for chunk, frequency in zip(chunks, frequencies, strict=True):
            norm = K1 * (1 - B + B * short.get(chunk, chunk_size) / average)
            scores[chunk] = scores.get(chunk, 0.0) + idf * frequency * (K1 + 1) / (frequency + norm)
    best = heapq.nlargest(k, scores.items(), key=lambda item: (item[1], -item[0]))
    results = []
    for chunk, score in best:
        file, begin, end = scanner.chunk_span(chunk)
        name, text = scanner.files[file]
        first, last = _char_span(text, begin, end)
        result: dict[str, Any] = {} if name is None else {"file": name}
        result.update(score=round(score, 3), start=first, text=text[first:last])
        results.append(result)
    return results


def _char_span(text: Text, begin: int, end: int) -> tuple[int, int]:
    """Byte offsets of a chunk as character positions of the text."""
    if isinstance(text, MappedText):
        return text.char_offset(begin), text.char_offset(end)
    if text.isascii():
        return begin, end
    data = _utf8(text)
    first = count_chars(data[:begin])
    return first, first + count_chars(data[begin:end])


# -- count_tokens and the reference --------------------------------------------------------------------


def count_tokens(x: Source) -> int:
    """Estimated tokens: ceil(characters / 4), summed over a dict's files. Not a tokenizer.

    About 4 characters make a token in English prose and code; other scripts take more tokens.
    """
    return sum(math.ceil(len(text) / CHARS_PER_TOKEN) for _, text in _files(x, "count_tokens"))


LLM_REFERENCE = (
    "llm_query(prompt, *, system=None, model=None, max_tokens=None): a sub-model's answer; raises LLMError\n"
    "llm_query_batched(prompts, ...): answers in order, concurrent; failures as LLMError; costly ones: confirm=True\n"
    "rlm_query(prompt, context=None, *, model=None, max_iterations=None): a child RLM's answer (own REPL);\n"
    "  .partial if it stopped at a cap; rlm_query_batched(prompts, contexts): in order, failures as RLMError\n"
    "memory: behaviors(query): earlier sessions' tips (llm_query(..., behaviors=True) sends them); remember(fact,\n"
    "  about=None), recall(about=None): facts about a loaded input; distill(): learn from this session now\n"
    "rlm_map(fn, url_glob) / llm_map(template, url_glob): over remote objects on the server's Ray cluster\n"
)
CONVENTIONS = (
    "contexts(): the loaded contexts; unload(name) frees one; show_vars(): your own variables, type and size\n"
    "_: last value; _out/_err: last cell's full output; _outs[n]: full output of cell n if elided"
)


def _signature(function: Callable[..., Any]) -> str:
    shown = []
    for parameter in inspect.signature(function).parameters.values():
        default = parameter.default
        shown.append(parameter.name if default is inspect.Parameter.empty else f"{parameter.name}={default!r}")
    return f"{function.__name__}({', '.join(shown)})"


def rlm_help() -> None:
    """Print this reference; help(name) gives a helper's details."""
    lines = ["REPL helpers; x: a str, a MappedText or a dict of name -> text (regexes: ASCII \\w on MappedText)"]
    for function in (peek, grep, chunk, split, search, count_tokens, rlm_help):
        summary = (function.__doc__ or "").strip().splitlines()[0]
        lines.append(f"{_signature(function)}: {summary}")
    print("\n".join(lines) + "\n" + LLM_REFERENCE + CONVENTIONS)


HELPERS: dict[str, object] = {
    "peek": peek,
    "grep": grep,
    "chunk": chunk,
    "split": split,
    "search": search,
    "count_tokens": count_tokens,
    "rlm_help": rlm_help,
}
