"""The trace viewer: its page opened and clicked in a real headless Chromium (testkit/browser.py), on a real
session's trace, a forged one, a synthetic one of 100k sub-calls, and a session followed while it runs."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from rlm_mcp.viewer import write_html
from rlm_mcp.viewer.events import load_events
from rlm_mcp.viewer.page import asset
from testkit.browser import Browser, chromium_path
from testkit.fakes import FakeProvider
from testkit.traces import write_synthetic
from tests.conftest import load, make_settings, run
from tests.test_stdio import console_script

pytestmark = pytest.mark.anyio

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ROWS = "[...document.querySelectorAll('.row')]"


@pytest.fixture
def browser() -> Iterator[Browser]:
    if chromium_path() is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package)")
    with Browser() as opened:
        yield opened


def artifact(browser: Browser, name: str) -> None:
    """A screenshot kept as the test's artifact (test-artifacts/), and checked to be a real picture."""
    ARTIFACTS.mkdir(exist_ok=True)
    browser.screenshot(ARTIFACTS / name)
    assert (ARTIFACTS / name).stat().st_size > 10_000


def row_texts(browser: Browser) -> dict[int, str]:
    return {
        int(k): v
        for k, v in browser.evaluate(f"Object.fromEntries({ROWS}.map(r => [r.dataset.id, r.textContent]))").items()
    }


def detail(browser: Browser) -> str:
    return browser.evaluate("document.getElementById('detail').textContent")


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


async def test_a_sessions_page_shows_its_tree_details_and_timeline(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, browser: Browser
) -> None:
    trace = await make_trace(tmp_path, data_dir, monkeypatch)
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    page = tmp_path / "trace.html"
    done = subprocess.run([console_script(), "trace", str(trace), "-o", str(page)], capture_output=True, text=True)
    assert done.returncode == 0 and f"({len(events)} events)" in done.stdout, done.stderr
    source = page.read_text()
    assert not re.search(r"<link|src=|href=|https?://", source)  # self-contained: nothing to fetch

    sub_call = next(e for e in events if e["type"] == "sub_call")
    browser.open(page.as_uri() + f"#select={sub_call['id']}")
    assert browser.evaluate("location.hash") == f"#select={sub_call['id']}"
    shown = detail(browser)
    assert sub_call["prompt"] in shown and sub_call["answer"] in shown and "tokens" in shown
    rows = row_texts(browser)
    assert set(rows) == {e["id"] for e in events}  # a small trace: every event has its row, the cells open
    failing = next(e for e in events if e["type"] == "cell" and e["error"])
    assert "error" in rows[failing["id"]] and "1 failed below" in rows[failing["parent"]]
    assert "3 sub-calls" in browser.evaluate("document.getElementById('totals').textContent")

    batch_tool = next(e for e in events if e["type"] == "tool" and "llm_query_batched" in json.dumps(e["arguments"]))
    browser.click(f'.row[data-id="{batch_tool["id"]}"] .kind')
    shown = detail(browser)
    assert "shown in cell" in shown and shown.count("llm_query_batched") == 1  # the code once, in its cell
    caption = browser.evaluate("({...document.getElementById('timeline-caption').dataset})")
    assert caption == {"bars": "3", "peak": "3"}  # the batch ran at once: three lanes, not one after another
    artifact(browser, "trace.png")


def test_a_missing_trace_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([console_script(), "trace", str(tmp_path / "none.jsonl")], capture_output=True, text=True)
    assert done.returncode == 1 and "cannot render" in done.stderr


# What an injected script or handler would do: mark the document, so the page's DOM shows it ran.
PWN = "document.documentElement.setAttribute('data-pwned','yes')"
HOSTILE_DIR = 'run<img src=x onerror="' + PWN + '">'  # the page's title and heading: a directory name


class Raw(str):
    """A line written as it is, not as JSON."""


def forged_lines() -> list[str]:
    """A trace as an attacker would write it: markup and attribute breakouts in every field, wrong types,
    lines that are not events, repeated ids, a parent cycle, endless nesting and huge texts."""
    lines = [
        {"id": 1, "parent": None, "type": f'tool" ontoggle="{PWN}" x="', "name": f"<script>{PWN}</script>"},
        {"id": f'2" ontoggle="{PWN}" x="', "parent": None, "type": "cell"},
        Raw(f'{{"id": 3, "type": "cell", "code": <img src=x onerror="{PWN}">'),
        [f"<script>{PWN}</script>"],
        f"<script>{PWN}</script>",
        {
            "id": 5,
            "parent": 1,
            "type": "cell",
            "name": f"x' ontoggle='{PWN}",
            "code": f'<img src=x onerror="{PWN}">',
            "stdout": f"</pre></script><script>{PWN}</script>",
            "error": f'Traceback\n<svg onload="{PWN}">',
            "elapsed_s": "<b>fast</b>",
        },
        {
            "id": 6,
            "parent": 5,
            "type": "sub_call",
            "model": f"<img src=x onerror={PWN}>",
            "backend": f"</summary><script>{PWN}</script>",
            "input_tokens": "<b>9</b>",
            "output_tokens": [1],
            "cost_usd": "free",
            "attempts": f"<script>{PWN}</script>",
            "cached": "yes",
            "prompt": {"nested": f"<script>{PWN}</script>"},
            "answer": "A" * 1_000_000,
            "error": 123,
        },
        {"id": 7, "parent": {"id": 1}, "type": "tool", "name": "wrong parent", "arguments": {"path": "</script>"}},
        {"id": 1, "parent": None, "type": "tool", "name": "a repeated id"},
        {"id": True, "type": "tool"},
        {"id": 8.5, "type": "tool"},
        {"id": 9, "parent": 9, "type": "cell", "name": "its own parent"},
        {"id": 10, "parent": 11, "type": "cell", "name": "cycle a"},
        {"id": 11, "parent": 10, "type": "cell", "name": "cycle b", "stderr": "lone \ud800 surrogate"},
        Raw("[" * 50_000 + "]" * 50_000),
    ]
    lines += [{"id": 100 + i, "parent": 99 + i if i else None, "type": "cell", "name": f"deep {i}"} for i in range(200)]
    lines += [
        {"id": 2**53, "type": "tool", "name": "an id a browser would round"},
        {"id": 400, "type": "cell", "name": "huge numbers", "input_tokens": 10**400, "started": 1e15},
        Raw('{"id": 401, "type": "tool"}\r{"id": 402, "type": "tool"}'),  # one line: only "\n" ends one
        Raw('{"id": 500, "type": "tool", "name": "' + "x" * 5_000_000 + '"}'),  # past the longest line read
        {"id": 501, "type": "tool", "name": "after the long line"},
        *(Raw(f"junk {i}") for i in range(60)),
    ]
    return [line if isinstance(line, Raw) else json.dumps(line) for line in lines]


class Page(HTMLParser):
    """Every element with its attributes, the title and the scripts of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, Any]]] = []
        self.scripts: list[str] = []
        self.title = ""
        self._open: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag in ("script", "title"):
            self._open.append(tag)
            if tag == "script":
                self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        where = self._open[-1] if self._open else None
        if where == "script":
            self.scripts[-1] += data
        elif where == "title":
            self.title += data


def write_forged(tmp_path: Path) -> Path:
    trace = tmp_path / HOSTILE_DIR / "trace.jsonl"
    trace.parent.mkdir()
    trace.write_text("\n".join(forged_lines()) + "\n", encoding="utf-8", errors="surrogatepass")
    return trace


def test_a_forged_trace_stays_data_in_the_page(tmp_path: Path) -> None:
    trace = write_forged(tmp_path)
    written = write_html(trace, tmp_path / "trace.html")
    source = (tmp_path / "trace.html").read_text(encoding="utf-8")
    page = Page(source)
    assert page.title == f"rlm-mcp trace: {HOSTILE_DIR}"
    assert len(page.scripts) == 2 and page.scripts[1] == asset("page.js")  # the data, then the viewer's own
    template = Page(asset("page.html"))
    assert [
        tag for tag, _ in page.elements if tag not in ("html", "head", "meta", "title", "style", "script", "body")
    ] == [tag for tag, _ in template.elements]  # no element the trace brought
    assert not [attrs for _, attrs in page.elements if any(name.startswith("on") for name in attrs)]  # no handler
    data = json.loads(page.scripts[0])  # one JSON value: nothing in it closed the element
    by_id = {event["id"]: event for event in data["events"]}
    assert len(by_id) == written.events == 1 + 2 + 1 + 3 + 200 + 2  # every valid event, once
    assert by_id[1]["type"] == "event" and by_id[1]["unknown_type"] == f'tool" ontoggle="{PWN}" x="'
    assert by_id[5]["stdout"] == f"</pre></script><script>{PWN}</script>"  # kept as text, shown as text
    assert "elapsed_s" not in by_id[5] and "input_tokens" not in by_id[6] and "cached" not in by_id[6]
    assert "parent" not in by_id[7] and "parent" not in by_id[9] and "parent" not in by_id[10]
    assert by_id[11]["parent"] == 10  # the cycle is cut where a parent is not an earlier event
    assert by_id[6]["answer"].endswith("[900,000 more characters]") and len(source) < 600_000
    problems = "\n".join(data["problems"])
    for number, why in [(2, "id is not an integer"), (3, "not JSON"), (4, "not a JSON object"), (5, "not a JSON")]:
        assert f"line {number}: {why}" in problems
    assert "line 8: event 7: parent is not an earlier event" in problems and "line 9: id 1 repeated" in problems
    assert "line 10: id is not an integer of at most 2**53 (true)" in problems and "line 15: not JSON" in problems
    assert "line 216: id is not an integer of at most 2**53 (9007199254740992)" in problems
    assert "input_tokens" not in by_id[400] and "started" not in by_id[400]  # numbers no page can hold
    assert "line 218: not JSON" in problems and "line 219: longer than 4,194,304 bytes" in problems
    assert 501 in by_id and data["problem_count"] == written.problems == 14 + 60 and len(data["problems"]) == 50
    policy = next(attrs["content"] for tag, attrs in page.elements if attrs.get("http-equiv"))
    assert "default-src 'none'" in policy and "script-src 'nonce-" in policy and "unsafe-inline" not in policy


def test_a_forged_trace_runs_no_injected_script_in_chromium(tmp_path: Path, browser: Browser) -> None:
    control = tmp_path / "control.html"  # the check itself works: a page that does run the payloads
    control.write_text(f'<html><body data-ready="yes"><img src=x onerror="{PWN}"></body>')
    browser.open(control.as_uri())
    assert browser.wait_for("document.documentElement.dataset.pwned") == "yes"

    trace = write_forged(tmp_path)
    page = tmp_path / "trace.html"
    done = subprocess.run([console_script(), "trace", str(trace), "-o", str(page)], capture_output=True, text=True)
    assert done.returncode == 0 and "(209 events)" in done.stdout, done.stderr
    assert "lines of the trace were skipped or changed" in done.stderr
    browser.open(page.as_uri() + "#select=6")
    assert "<script>" in detail(browser)  # the sub-call named in the address, its prompt shown as text
    browser.click("#expand")
    browser.click('.row[data-id="5"] .kind')
    assert f"</pre></script><script>{PWN}</script>" in detail(browser)  # shown, as text
    assert f'<img src=x onerror="{PWN}">' in detail(browser)
    browser.click('.row[data-id="1"] .kind')
    assert f'tool" ontoggle="{PWN}" x="' in detail(browser)
    assert browser.evaluate("document.documentElement.dataset.pwned") is None
    assert browser.evaluate("document.querySelectorAll('img,svg,iframe,object,embed,script[src]').length") == 0
    problems = browser.evaluate("document.getElementById('problems').textContent")
    assert "74 lines of the trace skipped or changed" in problems and "and 24 more" in problems
    deepest = browser.evaluate(
        "Math.max(...[...document.querySelectorAll('.row')].map(r => parseInt(r.style.paddingLeft)))"
    )
    assert deepest <= 24 * 14 + 4  # 200 levels of nesting, indented no further than the cap


def test_a_page_of_100k_sub_calls_draws_only_what_is_in_view(tmp_path: Path, browser: Browser) -> None:
    (tmp_path / "big").mkdir()
    synthetic = write_synthetic(tmp_path / "big" / "trace.jsonl", 100_000, concurrency=16)
    page = tmp_path / "big.html"
    assert write_html(synthetic.path, page).events == synthetic.events
    browser.open(page.as_uri())
    totals = browser.evaluate("document.getElementById('totals').textContent")
    assert "100,003 sub-calls" in totals and "1 child RLMs" in totals and "1 partial" in totals
    browser.click(f'.row[data-id="{synthetic.fan_cell}"] .twisty')  # open the cell of 100k sub-calls
    assert browser.evaluate("document.getElementById('spacer').offsetHeight") == synthetic.events * 22
    assert browser.evaluate(f"{ROWS}.length") < 120  # rows exist for the view only
    browser.click(f'.row[data-id="{synthetic.fan_cell}"] .kind')
    assert browser.evaluate("({...document.getElementById('timeline-caption').dataset})") == {
        "bars": "100000",
        "peak": "16",
    }
    artifact(browser, "trace-100k-timeline.png")

    browser.click("#q")
    browser.type("NEEDLE-4242")
    assert browser.wait_for("document.getElementById('matches').textContent") == "1 of 1"
    assert browser.evaluate("location.hash") == f"#select={synthetic.needle_sub_call}"
    assert "Count the errors in chunk" in row_texts(browser)[synthetic.needle_sub_call]  # scrolled to it
    browser.click("#overview")
    browser.click("#next-error")
    assert browser.evaluate("location.hash") == f"#select={synthetic.failed_sub_call}"
    assert "overloaded" in detail(browser) and "4" in detail(browser)
    browser.click("#next-error")
    assert browser.evaluate("location.hash") == f"#select={synthetic.failing_cell}"
    browser.click(f'.row[data-id="{synthetic.failing_cell}"] .kind')
    browser.key("ArrowLeft", key_code=37)  # the keyboard walks the tree: to the cell's tool call
    assert browser.evaluate("location.hash") == f"#select={synthetic.failing_cell - 1}"
    artifact(browser, "trace-100k-search.png")

    browser.open(page.as_uri() + f"#select={synthetic.child_rlm}")
    rows = row_texts(browser)
    assert "iterations" in rows[synthetic.child_rlm]  # a child RLM stopped at its cap is marked partial
    assert "partial: stopped at iterations" in detail(browser)


class Follow:
    """`rlm-mcp trace --follow` as a user runs it, and the address it prints."""

    def __init__(self, target: Path) -> None:
        self.process = subprocess.Popen(
            [console_script(), "trace", "--follow", str(target)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        found = re.search(r"open (http://127\.0\.0\.1:(\d+)(/[^ ]+/))", line)
        assert found, (line, self.process.stderr.read() if self.process.poll() is not None else "")
        self.url, self.port, self.path = found.group(1), int(found.group(2)), found.group(3)

    def get(self, path: str, host: str | None = None) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        connection.request("GET", path, headers={"Host": host or f"127.0.0.1:{self.port}"})
        response = connection.getresponse()
        return response.status, response.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def test_follow_serves_the_page_only_to_its_own_address(tmp_path: Path) -> None:
    session = tmp_path / "session"
    session.mkdir()
    follow = Follow(session)
    try:
        status, page = follow.get(follow.path)
        assert status == 200 and b'id="trace-data"' in page
        status, body = follow.get(follow.path + "events?offset=0&line=0")
        assert status == 200 and json.loads(body)["events"] == []  # no trace yet: nothing, and no error
        assert follow.get("/")[0] == 404 and follow.get("/wrong-token/events")[0] == 404
        assert follow.get(follow.path, host=f"attacker.example:{follow.port}")[0] == 403  # DNS rebinding
        assert follow.get(follow.path + "events?offset=x")[0] == 400
        os.mkfifo(session / "trace.jsonl")  # planted where the trace goes: refused, not opened and waited on
        status, body = follow.get(follow.path + "events?offset=0&line=0")
        assert status == 503 and b"not a regular file" in body
        (session / "trace.jsonl").unlink()
        (session / "trace.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
        (tmp_path / "elsewhere.jsonl").write_text('{"id": 1, "type": "tool", "name": "secret"}\n')
        status, body = follow.get(follow.path + "events?offset=0&line=0")
        assert status == 503 and b"secret" not in body
    finally:
        follow.stop()


async def test_follow_updates_the_page_while_the_session_runs(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, browser: Browser
) -> None:
    async with FakeProvider.running(answer=lambda prompt, system, model: f"answer to {prompt}", latency=0.3) as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
            await load(client, text="one\ntwo", name="notes")
            (session,) = (tmp_path / "workspace" / "sessions").glob("*/")
            follow = Follow(session)
            try:
                await anyio.to_thread.run_sync(browser.open, follow.url)
                await anyio.to_thread.run_sync(
                    browser.wait_for, "document.getElementById('totals').textContent.startsWith('1 tool calls')"
                )
                flag = data_dir / "go-on"  # the cell waits for it, so the page is seen while the cell runs
                code = (
                    "import os, time\nfor i in range(3):\n    llm_query(f'q{i}')\n"
                    f"for _ in range(1200):\n    if os.path.exists({str(flag)!r}):\n        break\n"
                    "    time.sleep(0.05)\n"
                )
                running = await client.call_tool("run_code", {"code": code, "wait_s": 0})
                assert running.structured_content["outcome"] == "running"
                # sub-calls land before their cell: the page shows them under the cell, marked running
                placeholder = await anyio.to_thread.run_sync(
                    browser.wait_for, f"{ROWS}.find(r => r.textContent.includes('not finished'))?.textContent"
                )
                assert "running" in placeholder
                await anyio.to_thread.run_sync(browser.click, "#q")
                await anyio.to_thread.run_sync(browser.type, "notes")  # a search open while events arrive
                await anyio.to_thread.run_sync(browser.wait_for, "document.getElementById('matches').textContent")
                await anyio.to_thread.run_sync(browser.click, '.row[data-id="1"] .kind')
                flag.write_text("")
                await run(client, "print('done')")
                final = await anyio.to_thread.run_sync(
                    browser.wait_for,
                    "(t => t.includes('3 sub-calls') && !t.includes('running') && t)"
                    "(document.getElementById('totals').textContent)",
                )
                assert "3 cells" in final or "2 cells" in final
                assert "following" in browser.evaluate("document.getElementById('status').textContent")
                assert browser.evaluate("location.hash") == "#select=1"  # new events did not move the selection
                artifact(browser, "trace-follow.png")
            finally:
                follow.stop()


def test_follow_reads_only_whole_lines(tmp_path: Path) -> None:
    trace = tmp_path / "s" / "trace.jsonl"
    trace.parent.mkdir()
    line = json.dumps({"id": 1, "parent": None, "type": "tool", "name": "load_context", "started": time.time()})
    trace.write_text(line[:20])  # a line the tracer is halfway through writing
    follow = Follow(trace)
    try:
        batch = json.loads(follow.get(follow.path + "events?offset=0&line=0")[1])
        assert batch["events"] == [] and batch["offset"] == 0
        with open(trace, "a") as handle:
            handle.write(line[20:] + "\n" + "not json\n")
        batch = json.loads(follow.get(follow.path + "events?offset=0&line=0")[1])
        assert [e["name"] for e in batch["events"]] == ["load_context"] and batch["problems"] == [
            "line 2: not JSON; skipped"
        ]
        assert batch["offset"] == trace.stat().st_size and batch["line"] == 2
    finally:
        follow.stop()


def test_follow_and_the_static_page_read_a_forged_trace_alike(tmp_path: Path) -> None:
    trace = write_forged(tmp_path)
    events, reader = load_events(trace)
    follow = Follow(trace.parent)
    try:
        followed: list[dict[str, Any]] = []
        problems: list[str] = []
        offset = line = 0
        while True:
            batch = json.loads(follow.get(follow.path + f"events?offset={offset}&line={line}")[1])
            followed += batch["events"]
            problems += batch["problems"]
            offset, line = batch["offset"], batch["line"]
            if not batch["more"]:
                break
    finally:
        follow.stop()
    assert followed == events and problems[:50] == reader.problems  # the same events, the same line numbers
    assert offset == trace.stat().st_size


def test_a_timeline_of_one_instant_still_draws_its_bars(tmp_path: Path, browser: Browser) -> None:
    trace = tmp_path / "instant" / "trace.jsonl"
    trace.parent.mkdir()
    lines = [{"id": 1, "type": "tool", "name": "run_code", "started": 1.8e9, "elapsed_s": 0}]
    lines += [{"id": 2, "parent": 1, "type": "cell", "name": "cell 1", "started": 1.8e9, "elapsed_s": 0}]
    lines += [{"id": i, "parent": 2, "type": "sub_call", "started": 1.8e9, "elapsed_s": 0} for i in (3, 4, 5)]
    trace.write_text("".join(json.dumps(line) + "\n" for line in lines))
    write_html(trace, tmp_path / "instant.html")
    browser.open((tmp_path / "instant.html").as_uri() + "#select=2")
    assert browser.evaluate("({...document.getElementById('timeline-caption').dataset})") == {"bars": "3", "peak": "3"}
    painted = browser.evaluate(
        "(c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; let n = 0;"
        " for (let i = 0; i < d.length; i += 4) if (d[i] > 180 && d[i + 2] < 120) n++; return n; })"
        "(document.getElementById('timeline'))"
    )
    assert painted > 20  # sub-call bars (amber) were drawn, not lost to a span of zero
