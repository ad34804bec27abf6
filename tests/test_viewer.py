"""The trace viewer: one self-contained HTML page, rendered and clicked in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mcp import Client

from rlm_mcp.server import build_server
from tests.conftest import load, make_settings, run
from tests.fakes import FakeProvider
from tests.test_stdio import console_script

pytestmark = pytest.mark.anyio

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package)")
    return found


async def make_trace(tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    async with FakeProvider.running(answer=lambda prompt, system, model: f"summary of {prompt}") as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
            await load(client, text="chapter one\nchapter two", name="book")
            await run(client, "notes = llm_query_batched([f'part {i}' for i in range(3)])")
            await run(client, "raise ValueError('the needle was not found')")
    (trace,) = (tmp_path / "workspace" / "sessions").glob("*/trace.jsonl")
    return trace


async def test_the_trace_renders_in_chromium_and_a_node_expands(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = await make_trace(tmp_path, data_dir, monkeypatch)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    page = tmp_path / "trace.html"
    done = subprocess.run([console_script(), "trace", str(trace), "-o", str(page)], capture_output=True, text=True)
    assert done.returncode == 0 and f"({len(events)} events)" in done.stdout, done.stderr
    source = page.read_text()
    assert not re.search(r"<link|src=|href=|https?://", source)  # self-contained: nothing to fetch

    browser = chromium()
    sub_call = next(e for e in events if e["type"] == "sub_call")
    flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", f"{page.as_uri()}#expand={sub_call['id']}"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for event in events:
        assert f'id="n{event["id"]}"' in dom, event
    opened = re.search(rf'<details class="sub_call" id="n{sub_call["id"]}"[^>]*>', dom)
    assert opened and "open" in opened.group(), "the script did not expand the sub-call named in the address"
    closed = [e for e in events if e["type"] == "sub_call" and e["id"] != sub_call["id"]]
    assert all(
        re.search(rf'id="n{e["id"]}"[^>]*>', dom) and " open" not in re.search(rf'id="n{e["id"]}"[^>]*>', dom).group()
        for e in closed
    )
    assert re.search(r'<details class="cell error"', dom) and "the needle was not found" in dom
    assert "3 sub-calls" in dom and "4 tool calls" not in dom

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "trace.png"
    subprocess.run(
        [browser, *flags, "--window-size=1280,900", f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert screenshot.stat().st_size > 10_000  # a real picture of the page, kept as the test's artifact


def test_a_missing_trace_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([console_script(), "trace", str(tmp_path / "none.jsonl")], capture_output=True, text=True)
    assert done.returncode == 1 and "cannot render" in done.stderr
