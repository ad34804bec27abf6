"""Findings keyed by content digest, and the cross-session answer cache, through the memory service."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rlm_mcp.errors import FindingsFull, MemoryUnavailable
from rlm_mcp.memory import answers, findings, inputs
from rlm_mcp.memory.answers import StoredAnswer
from rlm_mcp.memory.inputs import InputRef, input_of
from rlm_mcp.memory.service import Memory, session_tag
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
async def memory(tmp_path: Path) -> AsyncIterator[Memory]:
    data = tmp_path / "data"
    data.mkdir()
    service = Memory(make_settings(tmp_path, data, memory_auto_approve=True))  # findings offered as filed
    yield service
    service.close()


def file_input(path: Path) -> InputRef:
    request = {"kind": "file", "path": str(path), "size": path.stat().st_size}
    return input_of(request, "text file .log")


async def test_a_changed_file_is_a_new_input_and_gets_no_stale_facts(memory: Memory, tmp_path: Path) -> None:
    log = tmp_path / "data" / "app.log"
    log.write_text("ERROR one\n" * 10)
    assert await memory.remember("s1", file_input(log), "one ERROR per line", str(log))
    assert not await memory.remember("s1", file_input(log), "one  ERROR per\nline", str(log))  # the same line
    offered = await memory.for_load("s2", "context", str(log), file_input(log))
    assert [finding.text for finding in offered.findings] == ["one ERROR per line"]
    assert offered.findings[0].session == session_tag("s1")  # a one-way tag, never the resumable handle

    log.write_text("ERROR two\n" * 10)  # same size, other content
    assert (await memory.for_load("s3", "context", str(log), file_input(log))).findings == []
    log.write_text("ERROR one\n" * 10)  # the first content again (with a new modification time)
    assert [f.text for f in (await memory.for_load("s4", "context", str(log), file_input(log))).findings] == [
        "one ERROR per line"
    ]


async def test_a_digest_is_computed_only_when_a_finding_could_match(
    memory: Memory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = tmp_path / "data" / "big.log"
    log.write_text("x" * 1000)
    hashed: list[Path] = []
    real = inputs.hash_file

    def counting(path: Path) -> tuple[str, str]:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr("rlm_mcp.memory.service.hash_file", counting)
    await memory.for_load("s1", "context", str(log), file_input(log))
    assert hashed == []  # nothing filed for a 1,000-byte file: no hashing at all
    await memory.remember("s1", file_input(log), "all x", str(log))
    await memory.for_load("s2", "context", str(log), file_input(log))
    await memory.for_load("s3", "context", str(log), file_input(log))
    assert hashed == [log]  # hashed once, then known by its unchanged identity


async def test_trees_and_texts_are_keyed_by_content_too(memory: Memory, tmp_path: Path) -> None:
    tree = tmp_path / "data" / "repo"
    tree.mkdir()
    (tree / "a.py").write_text("print(1)\n")
    (tree / "b.py").write_text("print(2)\n")
    ref = input_of({"kind": "files", "root": str(tree), "files": ["a.py", "b.py"]}, "directory", 18)
    await memory.remember("s1", ref, "b.py prints 2", str(tree))
    assert [f.text for f in await memory.recall(ref)] == ["b.py prints 2"]
    (tree / "b.py").write_text("print(3)\n")
    assert await memory.recall(ref) == []
    text = input_of({"kind": "text", "text": "hello"}, "inline text")
    await memory.remember("s1", text, "a greeting", "inline text")
    assert [f.text for f in await memory.recall(input_of({"kind": "text", "text": "hello"}))] == ["a greeting"]
    assert await memory.recall(input_of({"kind": "text", "text": "hello!"})) == []


async def test_findings_are_bounded_per_input(memory: Memory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(findings, "MAX_PER_INPUT", 3)
    ref = input_of({"kind": "text", "text": "data"})
    for index in range(5):
        await memory.remember("s", ref, f"fact {index} " + "y" * 2_000, "inline text")
    kept = await memory.recall(ref)
    assert [f.text.split()[1] for f in kept] == ["2", "3", "4"]
    assert all(len(f.text) <= findings.FINDING_LIMIT for f in kept)


async def test_the_answer_cache_has_an_age_limit_and_a_size_cap(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    memory = Memory(make_settings(tmp_path, data, cache_days=1, cache_max_mb=1))
    key = answers.key_of("anthropic", "m", None, "prompt", 100)
    await memory.keep_answer(key, StoredAnswer("the answer", "m", 3, 2))
    assert await memory.stored_answer(key) == StoredAnswer("the answer", "m", 3, 2)
    assert await memory.stored_answer(answers.key_of("anthropic", "m", "sys", "prompt", 100)) is None
    memory.db.run(lambda c: c.execute("UPDATE answers SET created = created - 2 * 86400"))
    assert await memory.stored_answer(key) is None  # older than cache_days

    for index in range(3 * answers.PRUNE_EVERY):
        await memory.keep_answer(f"k{index}", StoredAnswer("z" * 20_000, "m", 1, 1))
    stats = memory.db.run(answers.stats)
    assert stats["bytes"] <= 1024 * 1024 + answers.PRUNE_EVERY * 20_300
    assert await memory.stored_answer(f"k{3 * answers.PRUNE_EVERY - 1}") is not None  # the newest stay
    assert await memory.stored_answer("k0") is None
    memory.close()


async def test_an_unusable_memory_costs_the_memory_never_the_call(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / "memory.sqlite3").write_bytes(os.urandom(4096))  # not a database
    memory = Memory(make_settings(tmp_path, data))
    ref = input_of({"kind": "text", "text": "data"})
    assert (await memory.for_load("s", "context", "inline text", ref)).behaviors == []
    assert await memory.behaviors("s", "anything", 5) == []
    assert await memory.stored_answer("k") is None
    memory.close()


async def test_memory_off_reads_and_writes_nothing(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    memory = Memory(make_settings(tmp_path, data, memory="off"))
    ref = input_of({"kind": "text", "text": "data"})
    await memory.keep_answer("k", StoredAnswer("a", "m", 1, 1))
    assert (await memory.for_load("s", "context", "inline text", ref)).findings == []
    assert not (tmp_path / "workspace" / "memory.sqlite3").exists()


async def test_a_file_changed_since_its_load_gets_no_findings_filed(memory: Memory, tmp_path: Path) -> None:
    log = tmp_path / "data" / "app.log"
    log.write_text("ERROR one\n" * 10)
    loaded = file_input(log)
    log.write_text("ERROR two\n" * 10)
    with pytest.raises(MemoryUnavailable, match="changed since it was loaded; load it again first"):
        await memory.remember("s1", loaded, "one ERROR per line", str(log))
    assert await memory.remember("s1", file_input(log), "two ERRORs", str(log))


async def test_a_text_with_a_files_bytes_does_not_share_its_findings(memory: Memory, tmp_path: Path) -> None:
    log = tmp_path / "data" / "app.log"
    log.write_text("ERROR one\n")
    await memory.remember("s1", input_of({"kind": "text", "text": "ERROR one\n"}), "planted", "inline text")
    assert await memory.recall(file_input(log)) == []


async def test_one_session_cannot_push_the_others_findings_out(memory: Memory) -> None:
    ref = input_of({"kind": "text", "text": "data"})
    await memory.remember("other", ref, "the real fact", "inline text")
    for index in range(findings.MAX_PER_SESSION):
        await memory.remember("noisy", ref, f"junk {index}", "inline text")
    with pytest.raises(FindingsFull, match="already filed 10 findings"):
        await memory.remember("noisy", ref, "one more", "inline text")
    assert "the real fact" in [f.text for f in await memory.recall(ref)]


async def test_a_link_in_place_of_a_file_is_not_followed(memory: Memory, tmp_path: Path) -> None:
    target = tmp_path / "secret.txt"
    target.write_text("secret")
    link = tmp_path / "data" / "link.txt"
    link.symlink_to(target)
    ref = InputRef("file", 6, path=link)
    with pytest.raises(MemoryUnavailable, match="cannot read"):
        await memory.remember("s1", ref, "x", str(link))
