"""The REPL helpers: the same answers on a str, on a MappedText of the same text, and per file on a dict."""

from __future__ import annotations

import itertools
import math
import pickle
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import rlm_mcp.worker.helpers as h
import rlm_mcp.worker.mapped as m
from rlm_mcp.worker.mapped import MappedChunks, MappedText

SAMPLE = (
    "Intro line with café\n"
    "# Heading one\n"
    "漢字 and more 漢字 on one line\r\n"
    "plain ascii line\n"
    "\n"
    "emoji 🙂 here, then ERROR: disk full\n"
    "## Heading two\n"
    "ERROR again, ERROR twice on this line\n"
    "last line without ending 🙂"
)


def random_text(seed: int, lines: int) -> str:
    """Lines of words mixing 1-, 2-, 3- and 4-byte characters, some empty, some with \\r\\n endings."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "café", "naïve", "漢字", "🙂", "x", "ERROR", "Δ", "token_42"]
    out = []
    for _ in range(lines):
        count = rng.choice([0, 1, 3, 7, 12])
        out.append(" ".join(rng.choice(words) for _ in range(count)) + rng.choice(["\n", "\n", "\r\n"]))
    return "".join(out) + rng.choice(["", "tail 🙂"])


@pytest.fixture
def no_str_of_mapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Helpers must never decode a whole MappedText: str() on one fails the test."""

    def refuse(self: MappedText) -> str:
        raise AssertionError("a helper called str() on a whole MappedText")

    monkeypatch.setattr(MappedText, "__str__", refuse)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny index blocks, decode pieces and counting windows, so that every boundary is crossed often."""
    monkeypatch.setattr(m, "BLOCK", 64)
    monkeypatch.setattr(h, "PIECE_BYTES", 37)
    monkeypatch.setattr(h, "COUNT_BYTES", 13)


@pytest.fixture
def mapped(tmp_path: Path, no_str_of_mapped: None) -> Iterator[Callable[[str], MappedText]]:
    opened: list[MappedText] = []

    def make(text: str) -> MappedText:
        path = tmp_path / f"text{len(opened)}.txt"
        path.write_bytes(text.encode("utf-8"))
        opened.append(MappedText(path))
        return opened[-1]

    yield make
    for text in opened:
        text.close()


# -- peek -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("start,n", [(0, 2000), (3, 10), (21, 5), (-5, 2000), (-30, 7), (10_000, 5), (0, 0)])
def test_peek_slices_by_characters_on_str_and_mapped(
    mapped: Callable[[str], MappedText], small_blocks: None, start: int, n: int
) -> None:
    expected = SAMPLE[len(SAMPLE) + start :][:n] if start < 0 else SAMPLE[start : start + n]
    assert h.peek(SAMPLE, start, n) == expected
    assert h.peek(mapped(SAMPLE), start, n) == expected


def test_peek_on_a_dict_lists_files_then_shows_the_first(mapped: Callable[[str], MappedText]) -> None:
    files = {"src/a.py": "print('a')\n" * 10, "b.md": mapped("# B 漢字\n")}
    shown = h.peek(files, 0, 5)
    assert shown.splitlines()[:3] == ["2 files, 117 chars:", "  src/a.py  110 chars", "  b.md  7 chars"]
    assert shown.endswith("--- src/a.py [0:5] ---\nprint")
    many = h.peek({f"f{i}": "x" for i in range(60)}, 0, 1)
    assert "f49  1 chars" in many and "f50" not in many and "... and 10 more" in many


def test_peek_rejects_a_negative_count() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        h.peek(SAMPLE, 0, -1)


# -- grep -----------------------------------------------------------------------------------------------


def test_grep_reports_one_hit_per_line_with_line_numbers_offsets_and_context() -> None:
    hits = h.grep("ERROR", SAMPLE, context_lines=1)
    assert [hit["line"] for hit in hits] == [6, 8]  # line 8 holds two matches: one hit, at the first
    assert hits[0]["text"] == "emoji 🙂 here, then ERROR: disk full"
    assert hits[0]["start"] == SAMPLE.index("ERROR")
    assert hits[1]["start"] == SAMPLE.index("ERROR again")
    assert hits[0]["before"] == [""] and hits[0]["after"] == ["## Heading two"]
    assert hits[1]["after"] == ["last line without ending 🙂"]

    crlf = h.grep("漢字", SAMPLE, context_lines=3)
    assert crlf == [
        {
            "line": 3,
            "text": "漢字 and more 漢字 on one line",  # the \r of \r\n is dropped with the \n
            "start": SAMPLE.index("漢字"),
            "before": ["Intro line with café", "# Heading one"],
            "after": ["plain ascii line", "", "emoji 🙂 here, then ERROR: disk full"],
        }
    ]
    assert [hit["line"] for hit in h.grep("^#", SAMPLE)] == [2, 7]  # ^ is a line start
    assert [hit["line"] for hit in h.grep("line$", SAMPLE)] == [4, 8]  # $ is a line end (not before \r: 3)
    assert [hit["line"] for hit in h.grep("^", SAMPLE)] == list(range(1, 10))
    assert [hit["line"] for hit in h.grep("$", "a\n\nb\n")] == [1, 2, 3]  # no phantom line after the last \n
    assert [hit["line"] for hit in h.grep("error", SAMPLE, flags=re.IGNORECASE)] == [6, 8]
    assert h.grep(re.compile("heading", re.I), SAMPLE, max_hits=1) == [
        {"line": 2, "text": "# Heading one", "start": SAMPLE.index("Heading")}
    ]
    assert h.grep("nowhere", SAMPLE) == []


PATTERNS = ["ERROR", "漢字", "🙂", "café", "^$", "^alpha", r"beta\r?$", "x x", r"token_\d+", "naïve 🙂", "^", "\n"]


@pytest.mark.parametrize("seed", [1, 2])
def test_grep_gives_the_same_hits_on_a_mapped_text(
    mapped: Callable[[str], MappedText], small_blocks: None, seed: int
) -> None:
    text = random_text(seed, 300)
    view = mapped(text)
    for pattern in PATTERNS:
        for context in (0, 2):
            expected = h.grep(pattern, text, context_lines=context, max_hits=1000)
            assert h.grep(pattern, view, context_lines=context, max_hits=1000) == expected, pattern
    # Spot-check the str answers against a naive line-by-line scan.
    lines = text.split("\n")
    naive = [i + 1 for i, line in enumerate(lines) if "漢字" in line]
    assert [hit["line"] for hit in h.grep("漢字", text, max_hits=10_000)] == naive
    for hit in h.grep("🙂", text, max_hits=10_000):
        assert text[hit["start"]] == "🙂" and hit["text"] == lines[hit["line"] - 1].removesuffix("\r")
    assert len(h.grep("alpha", view, max_hits=3)) == 3


def test_grep_clips_very_long_lines_around_the_match_identically(
    mapped: Callable[[str], MappedText], small_blocks: None
) -> None:
    long_line = "é漢🙂a" * 1500 + "NEEDLE" + "b🙂" * 2000
    text = "short\n" + long_line + "\r\n" + "x" * 2500 + "\nend"
    col = long_line.index("NEEDLE")
    expected_text = long_line[col - 1000 : col + 1000]
    for source in (text, mapped(text)):
        (hit,) = h.grep("NEEDLE", source, context_lines=1)
        assert hit["line"] == 2 and hit["clipped"] is True and hit["text"] == expected_text
        assert hit["start"] == text.index("NEEDLE")
        assert hit["before"] == ["short"] and hit["after"] == ["x" * 2000]
        (near_start,) = h.grep("^é漢", source)
        assert near_start["text"] == long_line[:1000]  # nothing before the match to show
    medium = "漢" * 1500  # 4,500 bytes but 1,500 characters: not clipped
    assert h.grep("漢", mapped(medium + "\n")) == [{"line": 1, "text": medium, "start": 0}]


def test_grep_on_a_dict_names_files_and_counts_lines_per_file(mapped: Callable[[str], MappedText]) -> None:
    files = {"a.py": "import os\ndef f():\n    return os.sep\n", "b/c.py": mapped("x = 1\n\ndef g():\n    pass\n")}
    assert h.grep(r"^def \w+", files) == [
        {"file": "a.py", "line": 2, "text": "def f():", "start": 10},
        {"file": "b/c.py", "line": 3, "text": "def g():", "start": 7},
    ]
    assert [hit["file"] for hit in h.grep("o", files, max_hits=2)] == ["a.py", "a.py"]


def test_grep_character_classes_are_ascii_only_on_a_mapped_text(mapped: Callable[[str], MappedText]) -> None:
    text = "un café\n"
    assert [hit["line"] for hit in h.grep(r"caf\w", text)] == [1]
    assert h.grep(r"caf\w", mapped(text)) == []  # documented: bytes regex
    assert h.grep("café", mapped(text))[0]["start"] == 3  # literal non-ASCII text still matches


def test_grep_counts_every_matching_line_and_says_when_it_stopped(
    mapped: Callable[[str], MappedText], capsys: pytest.CaptureFixture[str]
) -> None:
    text = "".join(f"License: {n}\n" if n % 3 == 0 else f"other {n}\n" for n in range(750))  # 250 matching lines
    for source in (text, mapped(text), {"a.txt": text, "b.txt": "License: b\n"}):
        hits = h.grep("License:", source)
        assert len(hits) == 100 and not hits.complete
        total = 251 if isinstance(source, dict) else 250
        assert hits.total == total and h.grep("License:", source, count=True) == total
        assert f"returned 100 of {total:,} matching lines (max_hits=100)" in capsys.readouterr().err
    every = h.grep("License:", text, max_hits=1000)
    assert every.complete and every.total == len(every) == 250 and capsys.readouterr().err == ""


def test_grep_matches_within_a_line_never_across_its_end(mapped: Callable[[str], MappedText]) -> None:
    text = "Package: x\n\n    License: MIT\n\n  \n    License: GPL\nend\n"
    for source in (text, mapped(text)):
        hits = h.grep(r"^\s+License:", source)
        assert [(hit["line"], hit["text"]) for hit in hits] == [(3, "    License: MIT"), (6, "    License: GPL")]
        assert h.grep(r"x\s+\S", source) == []  # "x" then the next line's start: not on one line
        assert h.grep(r"\s+", source, count=True) == 4  # the lines holding a space; empty lines hold none


def test_grep_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_hits must be at least 1"):
        h.grep("x", "x", max_hits=0)
    with pytest.raises(ValueError, match="context_lines must be 0 or more"):
        h.grep("x", "x", context_lines=-1)
    with pytest.raises(TypeError, match=r"join a list first"):
        h.grep("x", ["x"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value for 'n' is a int"):
        h.grep("x", {"n": 3})  # type: ignore[dict-item]


# -- chunk ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size,overlap", [(1, 0), (7, 0), (50, 10), (64, 63), (5000, 100)])
def test_chunk_by_chars_keeps_its_invariants(
    mapped: Callable[[str], MappedText], small_blocks: None, size: int, overlap: int
) -> None:
    text = random_text(3, 120)
    chunks = h.chunk(text, size, overlap)
    assert all(len(piece) <= size for piece in chunks)
    assert all(len(piece) == size for piece in chunks[:-1])
    assert chunks[0] == text[:size] and text.endswith(chunks[-1])
    for left, right in itertools.pairwise(chunks):
        assert left[size - overlap :] == right[:overlap]
    if overlap == 0:
        assert "".join(chunks) == text
    lazy = h.chunk(mapped(text), size, overlap)
    assert isinstance(lazy, MappedChunks) and len(lazy) == len(chunks) and lazy == chunks
    assert list(lazy) == chunks and lazy[-1] == chunks[-1] and lazy[1:3] == chunks[1:3]
    assert lazy + ["more"] == [*chunks, "more"] and ["first"] + lazy == ["first", *chunks]  # noqa: RUF005 (+ is tested)


def test_chunks_of_a_mapped_text_decode_each_piece_only_when_read(
    mapped: Callable[[str], MappedText], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = mapped("café au lait\n" * 10_000)
    decoded: list[tuple[int, int]] = []
    real = MappedText._decode
    monkeypatch.setattr(MappedText, "_decode", lambda self, a, b: decoded.append((a, b)) or real(self, a, b))
    chunks = h.chunk(text, 1_000)
    assert len(chunks) == 130 and decoded == []  # nothing decoded yet
    piece = ("café au lait\n" * 10_000)[5_000:6_000]
    assert chunks[5] == piece
    assert len(decoded) == 1 and decoded[0][1] - decoded[0][0] == len(piece.encode())  # that piece only
    assert "MappedChunks" not in repr(chunks) and "130 chunks of 1,000 characters" in repr(chunks)
    restored = pickle.loads(pickle.dumps(chunks))  # snapshots keep the path and the windows
    assert restored == chunks and restored[129] == chunks[129]
    with pytest.raises(IndexError):
        chunks[130]


def test_chunk_by_lines_groups_lines_with_their_endings(
    mapped: Callable[[str], MappedText], small_blocks: None
) -> None:
    text = random_text(4, 103)
    lines = text.splitlines(keepends=True)  # no \r alone, \x0b or the like in random_text: same as "\n" splits
    assert h.chunk(text, 10, by="lines") == ["".join(lines[i : i + 10]) for i in range(0, len(lines), 10)]
    overlapping = h.chunk(text, 10, 3, by="lines")
    assert overlapping[1] == "".join(lines[7:17])
    assert overlapping[-1].endswith(lines[-1]) and len(overlapping) == 15
    assert h.chunk(mapped(text), 10, 3, by="lines") == overlapping
    assert h.chunk("a\nb\nc", 2, by="lines") == ["a\nb\n", "c"]
    assert h.chunk("a\nb\n", 2, by="lines") == ["a\nb\n"]


def test_chunk_by_tokens_stays_in_budget_and_cuts_at_line_ends(
    mapped: Callable[[str], MappedText], small_blocks: None
) -> None:
    text = random_text(5, 200)
    chunks = h.chunk(text, 100, by="tokens")
    assert "".join(chunks) == text
    assert all(h.count_tokens(piece) <= 100 for piece in chunks)
    # Each cut is after a newline when one lies in the window's last tenth (the last 40 characters).
    for piece in chunks[:-1]:
        if "\n" in piece[-40:]:
            assert piece.endswith("\n")
    assert sum(piece.endswith("\n") for piece in chunks[:-1]) >= len(chunks) // 2
    assert h.chunk(mapped(text), 100, 10, by="tokens") == h.chunk(text, 100, 10, by="tokens")
    words = "word " * 30  # no newline: the cut is after a space
    assert all(piece.endswith(" ") for piece in h.chunk(words, 5, by="tokens"))


def test_chunk_on_a_dict_prefixes_each_chunk_with_its_file(mapped: Callable[[str], MappedText]) -> None:
    files = {"a.txt": "abcdef", "empty": "", "b.txt": mapped("漢字🙂")}
    assert h.chunk(files, 4) == ["### a.txt\nabcd", "### a.txt\nef", "### b.txt\n漢字🙂"]


@pytest.mark.parametrize(
    "size,overlap,by,message",
    [
        (0, 0, "chars", "size must be a whole number of chars above 0"),
        (-3, 0, "lines", "size must be a whole number of lines above 0"),
        (10, 10, "chars", r"overlap must be at least 0 and below size \(10\)"),
        (10, -1, "tokens", "overlap must be at least 0"),
        (10, 0, "words", 'by must be "chars", "lines" or "tokens"'),
    ],
)
def test_chunk_rejects_bad_arguments(size: int, overlap: int, by: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        h.chunk("some text", size, overlap, by)


def test_chunk_and_friends_handle_empty_texts(mapped: Callable[[str], MappedText]) -> None:
    for empty in ("", mapped("")):
        assert h.grep("$", empty) == []
        assert h.chunk(empty, 10) == [] and h.chunk(empty, 10, by="lines") == []
        assert h.grep("^", empty) == [] and h.split(empty, "markdown") == []
        assert h.peek(empty) == "" and h.count_tokens(empty) == 0


# -- split ----------------------------------------------------------------------------------------------

MARKDOWN = "preface\n# One\ntext #not\n## Two\n####### seven is not a heading\n#Tag\n### Three\nend"
PYTHON = (
    '"""Module."""\nimport os\n\n\n@decorator\n@other(1)\ndef f():\n    def inner():\n        pass\n\n'
    "class C(Base):\n    def method(self):\n        pass\n\nasync def g():\n    pass\nX = 1\n"
)
CHAPTERS = (
    "Title page\n\nChapter 1\nIt began.\n  CHAPTER XII\nLater.\nChapter One\nChapters are long.\nChapter 2: End\n"
)


def test_split_on_presets_keeps_headings_and_the_preface(
    mapped: Callable[[str], MappedText], small_blocks: None
) -> None:
    cases = {
        "markdown": [
            "preface\n",
            "# One\ntext #not\n",
            "## Two\n####### seven is not a heading\n#Tag\n",
            "### Three\nend",
        ],
        "python": [
            '"""Module."""\nimport os\n\n\n',
            "@decorator\n@other(1)\ndef f():\n    def inner():\n        pass\n\n",
            "class C(Base):\n    def method(self):\n        pass\n\n",
            "async def g():\n    pass\nX = 1\n",
        ],
        "chapters": [
            "Title page\n\n",
            "Chapter 1\nIt began.\n",
            "  CHAPTER XII\nLater.\n",
            "Chapter One\nChapters are long.\n",
            "Chapter 2: End\n",
        ],
    }
    sources = {"markdown": MARKDOWN, "python": PYTHON, "chapters": CHAPTERS}
    for preset, expected in cases.items():
        assert h.split(sources[preset], preset) == expected
        assert "".join(expected) == sources[preset]
        assert h.split(mapped(sources[preset]), preset) == expected
    assert h.split("# Only\nbody\n", "markdown") == ["# Only\nbody\n"]  # no empty preface


def test_split_on_a_regex_matches_at_line_starts_only(mapped: Callable[[str], MappedText]) -> None:
    text = "x == 1\n== 漢字 ==\nbody 🙂\n== B ==\n"
    assert h.split(text, "==") == ["x == 1\n", "== 漢字 ==\nbody 🙂\n", "== B ==\n"]
    assert h.split(mapped(text), "==") == h.split(text, "==")
    assert h.split("a\nPart b\npart c\n", "(?i)part") == ["a\n", "Part b\n", "part c\n"]
    assert h.split("a\nPart b\npart c\n", re.compile("part", re.I)) == ["a\n", "Part b\n", "part c\n"]
    files = {"one.md": "# A\nx\n# B\n", "two.md": mapped("no heading\n")}
    assert h.split(files, "markdown") == ["### one.md\n# A\nx\n", "### one.md\n# B\n", "### two.md\nno heading\n"]


# -- search ---------------------------------------------------------------------------------------------


def haystack(seed: int, chars: int) -> tuple[str, int]:
    """S-NIAH style: generated filler with one sentence holding rare words at a random depth."""
    rng = random.Random(seed)
    vocabulary = [f"{a}{b}" for a in ("ka", "lo", "mi", "ne", "su", "to", "ré", "漢") for b in ("n", "r", "sa", "ti")]
    filler = []
    size = 0
    while size < chars:
        sentence = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(5, 14))) + ".\n"
        filler.append(sentence)
        size += len(sentence)
    depth = rng.randrange(len(filler))
    needle = "The secret passphrase is zanzibar quokka.\n"
    text = "".join(filler[:depth]) + needle + "".join(filler[depth:])
    return text, text.index(needle)


def test_search_ranks_the_chunk_with_the_rare_words_first(mapped: Callable[[str], MappedText]) -> None:
    text, at = haystack(11, 2_000_000)
    results = h.search("what is the secret passphrase quokka", text, k=5)
    best = results[0]
    end = best["start"] + len(best["text"])  # 2,000 bytes of UTF-8: fewer characters, in this accented text
    assert best["start"] <= at < end or best["start"] <= at + 40 < end
    assert "quokka" in best["text"] and best["text"] == text[best["start"] : end]
    assert len(best["text"].encode()) <= 2000 < len(best["text"].encode()) + 4
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)
    assert all(isinstance(r["score"], float) and round(r["score"], 3) == r["score"] for r in results)
    assert h.search("what is the secret passphrase quokka", mapped(text), k=5) == results
    assert h.search("nothing like this", text) == []  # no chunk holds a query word


def test_search_on_a_dict_names_the_file_and_offsets_within_it(mapped: Callable[[str], MappedText]) -> None:
    files = {
        "notes.txt": "lorem ipsum " * 400,
        "config.py": mapped("TIMEOUT = 30\n" + "pad line\n" * 300 + "RETRY_BACKOFF = exponential\n"),
    }
    (hit,) = h.search("retry_backoff", files, k=3, chunk_size=500)
    assert hit["file"] == "config.py" and "RETRY_BACKOFF" in hit["text"]
    assert hit["start"] % 500 == 0 and files["config.py"][hit["start"] : hit["start"] + 500] == hit["text"]


def test_search_scores_follow_bm25_and_reuse_the_index() -> None:
    docs = ["apple banana".ljust(20), "apple apple cherry".ljust(20), "durian".ljust(20), "apple"]
    text = "".join(docs)  # chunk_size 20: one chunk each, the last one 5 characters long
    results = h.search("apple", text, chunk_size=20)
    average = len(text) / 4  # characters per chunk: a chunk's length is its size
    idf = math.log((4 - 3 + 0.5) / (3 + 0.5) + 1)

    def bm25(tf: int, length: int) -> float:
        return idf * tf * 2.5 / (tf + 1.5 * (1 - 0.75 + 0.75 * length / average))

    # The short chunk's one hit outweighs two in a long one: BM25's length normalization (b = 0.75).
    expected = [(60, round(bm25(1, 5), 3)), (20, round(bm25(2, 20), 3)), (0, round(bm25(1, 20), 3))]
    assert [(r["start"], r["score"]) for r in results] == expected
    index = h._SEARCH_CACHE[(id(text), 20)]
    h.search("banana", text, chunk_size=20)
    assert h._SEARCH_CACHE[(id(text), 20)] is index  # same input: no rebuild
    other = text.upper()
    h.search("apple", other, chunk_size=20)
    assert h._SEARCH_CACHE[(id(text), 20)] is index  # the last two inputs are kept


def test_search_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="no words to look for"):
        h.search("?!", "text")
    with pytest.raises(ValueError, match="k is how many chunks"):
        h.search("text", "text", k=0)
    with pytest.raises(ValueError, match="chunk_size must be a whole number"):
        h.search("text", "text", chunk_size=0)
    with pytest.raises(TypeError, match="query comes first"):
        h.search(["text"], "text")  # type: ignore[arg-type]


# -- count_tokens and the reference ---------------------------------------------------------------------


def test_count_tokens_estimates_four_characters_a_token(mapped: Callable[[str], MappedText]) -> None:
    assert h.count_tokens("") == 0 and h.count_tokens("abcd") == 1 and h.count_tokens("abcde") == 2
    emoji = "🙂" * 9  # 36 bytes, 9 characters
    assert h.count_tokens(mapped(emoji)) == h.count_tokens(emoji) == 3
    assert h.count_tokens({"a": "abcde", "b": mapped("漢字")}) == 3


def test_rlm_help_is_short_and_names_everything(capsys: pytest.CaptureFixture[str]) -> None:
    h.rlm_help()
    shown = capsys.readouterr().out
    assert len(shown) < 1_900  # printed on demand, not every turn; it grew by rlm_query, the memory, the maps
    for name in [*h.HELPERS, "llm_query(", "llm_query_batched(", "LLMError", "rlm_query(", "rlm_query_batched(",
                 "RLMError", "_outs[n]", "_out", "_err"]:  # fmt: skip
        assert name in shown, name
    for name, function in h.HELPERS.items():
        assert getattr(function, "__name__", None) == name
        first_line = (function.__doc__ or "").strip().splitlines()[0]
        assert first_line in shown  # built from the docstrings: it cannot drift
    assert set(h.HELPERS) == {"peek", "grep", "chunk", "split", "search", "count_tokens", "rlm_help"}


def _reference_search(query: str, text: str, k: int, size: int) -> list[tuple[int, float]]:
    """BM25 over chunks of `size` bytes computed the slow, obvious way, for checking the scanner."""
    data = text.encode().translate(h._SEARCH_BYTES)
    chunks = -(-len(data) // size)
    frequencies: dict[bytes, dict[int, int]] = {}
    for word in re.finditer(rb"[^ ]+", data):
        start, end = word.span()
        if start // size == (end - 1) // size:
            counts = frequencies.setdefault(word.group(), {})
            counts[start // size] = counts.get(start // size, 0) + 1
    average = len(data) / chunks
    scores: dict[int, float] = {}
    for term in {t.encode() for t in re.findall(r"\w+", query.lower())}:
        found = frequencies.get(term, {})
        idf = math.log((chunks - len(found) + 0.5) / (len(found) + 0.5) + 1)
        for chunk, tf in found.items():
            length = min(size, len(data) - chunk * size)
            norm = 1.5 * (1 - 0.75 + 0.75 * length / average)
            scores[chunk] = scores.get(chunk, 0.0) + idf * tf * 2.5 / (tf + norm)
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [(chunk * size, round(score, 3)) for chunk, score in best]


@pytest.mark.parametrize("seed", range(6))
def test_search_agrees_with_plain_bm25_on_any_text(
    seed: int, mapped: Callable[[str], MappedText], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random ASCII texts with a small vocabulary (so a word is in nearly every chunk, and the scanner
    counts chunk by chunk) and rare words, adjacent repeats, mixed case and punctuation, windows of a few
    chunks (so words meet the windows' edges): the same ranking as the obvious computation."""
    rng = random.Random(seed)
    monkeypatch.setattr(h, "SCAN_WINDOW_BYTES", 96)
    words = ["ok", "OK", "ok ok", "error", "Error!", "db", "retry_backoff", "x1", "rare", "(ok)", "ok-ok"]
    text = " ".join(rng.choice(words) for _ in range(rng.randint(200, 600))) + rng.choice(["", " ", "\n"])
    for size in (16, 32, 50):
        for query in ("ok", "error rare", "retry_backoff db", "OK x1 missing"):
            h._SEARCH_CACHE.clear()
            expected = _reference_search(query, text, 8, size)
            got = [(r["start"], r["score"]) for r in h.search(query, text, k=8, chunk_size=size)]
            assert got == expected, (query, size)
            assert [(r["start"], r["score"]) for r in h.search(query, mapped(text), k=8, chunk_size=size)] == expected


def test_search_of_words_seen_before_scans_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "alpha beta gamma " * 1000
    h.search("alpha beta", text)
    scanned: list[list[bytes]] = []
    scanner = h._SEARCH_CACHE[(id(text), 2000)]
    real = scanner._scan
    monkeypatch.setattr(scanner, "_scan", lambda words: scanned.append(words) or real(words))
    h.search("beta alpha", text)
    h.search("gamma alpha", text)
    assert scanned == [[b"gamma"]]  # only the new word


def test_search_reads_words_as_prose_writes_them(mapped: Callable[[str], MappedText]) -> None:
    """Curly quotes, dashes and no-break spaces separate words; ASCII case is folded, other letters match
    as written (as on a MappedText's regexes)."""
    text = "“Hello” she said.\u00a0Émile—naïve café… " + "filler " * 400
    for query in ("hello", "HELLO", "Émile", "naïve", "café"):
        (best, *_) = h.search(query, text, k=1)
        assert best["start"] == 0, query
    assert h.search("émile", text) == []  # É is not ASCII: not folded
    on_disk = mapped(text)  # words of ASCII word characters and non-ASCII bytes, as its regexes' \w is ASCII
    assert h.search("SAID", on_disk)[0]["start"] == 0
    assert h.search("hello", on_disk) == [] and h.search("café", on_disk) == []  # “hello” and café… are words there
