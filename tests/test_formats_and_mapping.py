"""Loading what real inputs look like: huge text (memory-mapped), JSON, JSON Lines, CSV, compressed files.

Through the real MCP client into a real worker, as a model would: load_context, then code in the REPL.
Generated corpora carry a needle at a random depth (S-NIAH style); the 1 GB case runs with `-m slow`.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from tests.conftest import load, make_settings, run, text_of, value_of, worker_pid

pytestmark = pytest.mark.anyio

ALPHABET = "abcdefghij klmnop\nqrstuvwxyz éüß 漢字 🙂\n"


def write_corpus(path: Path, chars: int, seed: int) -> tuple[str, int]:
    """Multi-byte text of about `chars` characters with one needle at a random depth; returns (needle, depth)."""
    rng = random.Random(seed)
    needle = f"NEEDLE-{rng.randrange(10**9)}: the magic number is {rng.randrange(10**6)}"
    depth = rng.randrange(chars)
    block = "".join(rng.choice(ALPHABET) for _ in range(100_000))
    with open(path, "w", encoding="utf-8") as handle:
        written = 0
        while written < chars:
            piece = block[: min(len(block), chars - written)]
            if written <= depth < written + len(piece):
                cut = depth - written
                piece = piece[:cut] + needle + piece[cut:]
            handle.write(piece)
            written += len(piece)
    return needle, depth


@pytest.fixture
async def client(tmp_path: Path, data_dir: Path) -> AsyncIterator[Client]:
    settings = make_settings(tmp_path, data_dir, mmap_threshold_mb=1, max_file_bytes=50_000_000)
    async with Client(build_server(settings)) as connected:
        yield connected


async def test_a_big_file_is_memory_mapped_and_behaves_like_the_str(client: Client, data_dir: Path) -> None:
    needle, depth = write_corpus(data_dir / "corpus.txt", 3_000_000, seed=7)
    result = await load(client, path="corpus.txt")
    data = result.structured_content
    assert data is not None and data["kind"] == "mapped", text_of(result)
    assert "memory-mapped" in text_of(result)
    full = (data_dir / "corpus.txt").read_text(encoding="utf-8")
    assert data["chars"] == len(full) and data["lines"] == full.count("\n") + (not full.endswith("\n"))
    # The REPL compares the mapped text with the decoded file on random slices and searches.
    check = """
import random
full = open(context.path, encoding='utf-8').read()
rng = random.Random(3)
assert len(context) == len(full)
for _ in range(300):
    a, b = sorted(rng.randrange(-len(full) - 5, len(full) + 5) for _ in range(2))
    assert context[a:b] == full[a:b], (a, b)
    probe = full[a:a + rng.randrange(1, 5)] or 'zz'
    assert context.find(probe, a // 2) == full.find(probe, a // 2), probe
    assert context.rfind(probe) == full.rfind(probe), probe
    assert (probe in context) == (probe in full)
assert context.count('漢') == full.count('漢')
assert list(context)[:50] == full.splitlines(keepends=True)[:50]
'ok'"""
    assert await value_of(client, check) == "'ok'"
    assert await value_of(client, f"context.find({needle!r})") == str(depth)
    assert await value_of(client, f"context[{depth}:{depth + len(needle)}]") == repr(needle)


async def test_mapping_does_not_copy_the_file_into_the_workers_memory(
    client: Client, tmp_path: Path, data_dir: Path
) -> None:
    write_corpus(data_dir / "corpus.txt", 40_000_000, seed=11)
    await run(client, "pass")
    status = Path(f"/proc/{worker_pid(tmp_path)}/status")

    def anon_kib() -> int:
        fields = dict(line.split(":", 1) for line in status.read_text().splitlines())
        return int(fields["RssAnon"].split()[0])

    before = anon_kib()
    result = await load(client, path="corpus.txt")
    assert result.structured_content["kind"] == "mapped"  # type: ignore[index]
    assert await value_of(client, "context.count('NEEDLE')") == "1"  # every page touched
    grown_mib = (anon_kib() - before) / 1024
    assert grown_mib < 8, f"the worker's private memory grew by {grown_mib:.0f} MiB for a ~60 MB file"


@pytest.mark.parametrize("chars", [50_000_000, pytest.param(1_000_000_000, marks=pytest.mark.slow)])
async def test_a_huge_log_loads_and_the_needle_is_found(tmp_path: Path, data_dir: Path, chars: int) -> None:
    needle, depth = write_corpus(data_dir / "huge.txt", chars, seed=1)
    settings = make_settings(tmp_path, data_dir, timeout_s=300, mmap_threshold_mb=16)
    async with Client(build_server(settings)) as client:
        result = await load(client, path="huge.txt")
        assert result.structured_content["kind"] == "mapped", text_of(result)  # type: ignore[index]
        code = f"[(hit['start'], {needle!r} in hit['text']) for hit in grep(r'NEEDLE-\\d+', context)]"
        assert await value_of(client, code) == f"[({depth}, True)]"
        assert await value_of(client, f"context[{depth}:{depth + len(needle)}]") == repr(needle)


async def test_json_is_parsed_and_broken_json_falls_back_to_text(client: Client, data_dir: Path) -> None:
    (data_dir / "good.json").write_text(json.dumps({"users": [{"id": 1}, {"id": 2}]}))
    result = await load(client, path="good.json", name="good")
    assert result.structured_content["kind"] == "json", text_of(result)  # type: ignore[index]
    assert await value_of(client, "[u['id'] for u in good['users']]") == "[1, 2]"
    (data_dir / "bad.json").write_text('{\n  "a": 1,\n  "b": oops\n}')
    result = await load(client, path="bad.json", name="bad")
    assert not result.is_error and result.structured_content["kind"] == "str"  # type: ignore[index]
    assert "not valid JSON (line 3, column 8" in text_of(result)
    assert await value_of(client, "bad.count('oops')") == "1"


async def test_json_lines_csv_and_compressed_files(client: Client, data_dir: Path) -> None:
    records = [{"level": "ERROR" if i % 7 == 0 else "INFO", "n": i} for i in range(1_000)]
    lines = "".join(json.dumps(record) + "\n" for record in records)
    (data_dir / "events.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    result = await load(client, path="events.jsonl.gz", name="events")
    assert result.structured_content["kind"] == "jsonl", text_of(result)  # type: ignore[index]
    assert "decompressed from gz" in text_of(result)
    assert await value_of(client, "sum(e['level'] == 'ERROR' for e in events)") == str(
        sum(i % 7 == 0 for i in range(1_000))
    )

    (data_dir / "table.csv.bz2").write_bytes(bz2.compress(b'name,age\nada,36\n"lovelace, a",37\n'))
    result = await load(client, path="table.csv.bz2", name="table")
    assert result.structured_content["kind"] == "csv", text_of(result)  # type: ignore[index]
    assert await value_of(client, "table[1]['name'], table[1]['age']") == "('lovelace, a', '37')"

    (data_dir / "notes.txt.xz").write_bytes(lzma.compress("plain ünïcode\n".encode()))
    result = await load(client, path="notes.txt.xz", name="notes")
    assert await value_of(client, "notes") == repr("plain ünïcode\n")

    (data_dir / "mixed.jsonl").write_text('{"ok": 1}\nnot json\n')
    result = await load(client, path="mixed.jsonl", name="mixed")
    assert "line 2 is not valid JSON" in text_of(result)
    assert await value_of(client, "type(mixed).__name__") == "'str'"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.gz", b"\x1f\x8b\x08\x00not really gzip", "cannot decompress it as gz"),
        ("broken.xz", b"definitely not xz", "cannot decompress it as xz"),
        ("report.pdf", b"%PDF-1.4\n%%EOF\n", "reading PDF needs the optional extra: pip install 'rlm-mcp[docs]'"),
        ("letter.docx", b"PK\x03\x04", "reading DOCX needs the optional extra: pip install 'rlm-mcp[docs]'"),
    ],
)
async def test_unreadable_formats_say_why_and_the_session_goes_on(
    client: Client, data_dir: Path, name: str, content: bytes, message: str
) -> None:
    if name.endswith((".pdf", ".docx")):
        try:
            __import__("pypdf" if name.endswith(".pdf") else "docx")
            pytest.skip("the docs extra is installed here, so the missing-extra error cannot occur")
        except ImportError:
            pass
    (data_dir / name).write_bytes(content)
    await run(client, "kept = 'still here'")
    result = await load(client, path=name)
    assert result.is_error and message in text_of(result), text_of(result)
    assert await value_of(client, "kept") == "'still here'"


async def test_a_compressed_file_is_capped_by_its_decompressed_size(tmp_path: Path, data_dir: Path) -> None:
    (data_dir / "bomb.txt.gz").write_bytes(gzip.compress(b"0" * 5_000_000))
    settings = make_settings(tmp_path, data_dir, max_file_bytes=1_000_000)
    async with Client(build_server(settings)) as client:
        result = await load(client, path="bomb.txt.gz")
        assert result.is_error and "decompressed, the file holds more than 1,000,000 bytes" in text_of(result)


async def test_contexts_are_listed_and_unloading_one_frees_it_for_good(
    client: Client, tmp_path: Path, data_dir: Path
) -> None:
    (data_dir / "small.txt").write_text("small\n")
    (data_dir / "large.txt").write_text("x" * 30_000_000)  # above the 1 MiB mmap threshold: mapped
    (data_dir / "mid.txt").write_text("m" * 900_000)
    for name in ("small", "large", "mid"):
        assert not (await load(client, path=f"{name}.txt", name=name)).is_error
    listing = await value_of(client, "list(contexts().items())")
    assert listing == str(
        [("small", "str, 6 chars"), ("large", "MappedText, 30,000,000 chars"), ("mid", "str, 900,000 chars")]
    )
    assert await value_of(client, "unload('large'); unload('mid')") == "\"unloaded 'mid'\""
    assert "NameError" in text_of(await run(client, "large"))
    assert await value_of(client, "list(contexts())") == "['small']"
    # After a worker crash, only the context still loaded comes back.
    crashed = await run(client, "import os; os._exit(1)")
    assert "contexts reloaded: small" in text_of(crashed)
    assert await value_of(client, "list(contexts())") == "['small']"


async def test_the_helpers_find_a_needle_in_a_mapped_corpus_through_mcp(client: Client, data_dir: Path) -> None:
    needle, depth = write_corpus(data_dir / "corpus.txt", 5_000_000, seed=23)
    await load(client, path="corpus.txt")
    code = f"[(hit['start'], {needle!r} in hit['text']) for hit in grep(r'NEEDLE-\\d+', context)]"
    assert await value_of(client, code) == f"[({depth}, True)]"
    best = await value_of(client, "search('magic number', context, k=3)[0]['text'].count('magic number is')")
    assert best == "1"
    assert await value_of(client, "sum(map(len, chunk(context, 1_000_000))) == len(context)") == "True"
    assert await value_of(client, "count_tokens(context) == -(-len(context) // 4)") == "True"
    assert "grep(pattern, x" in text_of(await run(client, "rlm_help()"))


def test_character_positions_convert_exactly_in_valid_and_broken_utf8(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Byte offset of each character: the fast path (decode the block) and the bisection for broken UTF-8
    agree with counting lead bytes one by one."""
    import random

    import rlm_mcp.worker.mapped as mapped_module

    monkeypatch.setattr(mapped_module, "BLOCK", 64)
    rng = random.Random(5)
    for trial in range(60):
        parts = []
        for _ in range(rng.randint(1, 200)):
            parts.append(rng.choice(["a", "é", "漢", "😀", "\n"]).encode())
            if rng.random() < 0.05:
                parts.append(bytes([rng.choice([0x80, 0xBF, 0xC3, 0xFF, 0xE6])]))  # stray or cut sequences
        data = b"".join(parts)
        path = tmp_path / f"t{trial}.txt"
        path.write_bytes(data)
        text = mapped_module.MappedText(path)
        leads = [offset for offset, value in enumerate(data) if not 0x80 <= value < 0xC0]
        for char in range(len(text) + 2):
            expected = 0 if char <= 0 else (leads[char] if char < len(leads) else len(data))
            assert text._byte_of(char) == expected, (trial, char)
        text.close()
