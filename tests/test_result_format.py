"""What the model reads by default: the designed text, no structuredContent, and short.

A host that finds structuredContent shows the model its JSON and drops the text (Claude Code does), so by
default results carry the text only; `--structured-content` adds the data for programs. The sizes asserted
here are those issue 13 asks of results as the model reads them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from tests.conftest import load, make_settings, run, text_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def plain(tmp_path: Path, data_dir: Path) -> AsyncIterator[Client]:
    async with Client(build_server(make_settings(tmp_path, data_dir, structured_content=False))) as client:
        yield client


async def test_results_are_the_designed_text_without_structured_content(plain: Client) -> None:
    trivial = await run(plain, "1 + 1")
    assert trivial.structured_content is None
    assert text_of(trivial).startswith("Out: 2\n[ok, state kept,") and len(text_of(trivial)) <= 100
    assert len(text_of(await run(plain, "x = 41"))) <= 100


async def test_a_twenty_megabyte_load_reads_in_under_450_characters(plain: Client, data_dir: Path) -> None:
    line = "2026-11-30 12:00:00 INFO request served in 12 ms by worker 7 of the pool\n"
    (data_dir / "service.log").write_text(line * (20_000_000 // len(line)))
    result = await load(plain, path="service.log")
    assert not result.is_error and result.structured_content is None
    assert "19,999," in text_of(result) and len(text_of(result)) <= 450, text_of(result)


async def test_the_output_of_a_cell_is_capped_at_eight_thousand_characters_by_default(plain: Client) -> None:
    result = await run(plain, "print('x' * 10_000_000)")
    assert 8_000 <= len(text_of(result)) <= 8_600 and "10,000,001" in text_of(result)


async def test_structured_content_comes_when_asked_for(tmp_path: Path, data_dir: Path) -> None:
    async with Client(build_server(make_settings(tmp_path, data_dir, structured_content=True))) as client:
        result = await run(client, "1 + 1")
    assert result.structured_content is not None and result.structured_content["result"] == "2"
