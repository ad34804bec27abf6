"""The trace viewer: one self-contained HTML page, rendered and clicked in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.server import build_server
from rlm_mcp.viewer import SCRIPT, write_html
from testkit.fakes import FakeProvider
from tests.conftest import load, make_settings, run
from tests.test_stdio import console_script

pytestmark = pytest.mark.anyio

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("Chromium is not installed (.ci/run installs Debian's chromium package)")
    return found


def dump_dom(page: Path, fragment: str = "") -> str:
    """The page's DOM after its scripts ran (and any image failed to load), as Chromium serialises it."""
    return subprocess.run(
        [chromium(), *FLAGS, "--virtual-time-budget=3000", "--dump-dom", page.as_uri() + fragment],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


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

    sub_call = next(e for e in events if e["type"] == "sub_call")
    dom = dump_dom(page, f"#expand={sub_call['id']}")
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
        [chromium(), *FLAGS, "--window-size=1280,900", f"--screenshot={screenshot}", page.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert screenshot.stat().st_size > 10_000  # a real picture of the page, kept as the test's artifact


def test_a_missing_trace_is_a_clear_error(tmp_path: Path) -> None:
    done = subprocess.run([console_script(), "trace", str(tmp_path / "none.jsonl")], capture_output=True, text=True)
    assert done.returncode == 1 and "cannot render" in done.stderr


# What an injected script or handler would do: mark the document, so the DOM Chromium dumps shows it ran.
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
            "stdout": f"</pre><script>{PWN}</script>",
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
        {"id": 7, "parent": {"id": 1}, "type": "tool", "name": "wrong parent", "arguments": {"path": "</pre>"}},
        {"id": 1, "parent": None, "type": "tool", "name": "a repeated id"},
        {"id": True, "type": "tool"},
        {"id": 8.5, "type": "tool"},
        {"id": 9, "parent": 9, "type": "cell", "name": "its own parent"},
        {"id": 10, "parent": 11, "type": "cell", "name": "cycle a"},
        {"id": 11, "parent": 10, "type": "cell", "name": "cycle b", "stderr": "lone \ud800 surrogate"},
        Raw("[" * 50_000 + "]" * 50_000),
    ]
    lines += [{"id": 100 + i, "parent": 99 + i if i else None, "type": "cell"} for i in range(200)]
    return [line if isinstance(line, Raw) else json.dumps(line) for line in lines]


class Page(HTMLParser):
    """Every element with its attributes, the text a reader sees, the title and the scripts of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, Any]]] = []
        self.text: list[str] = []
        self.scripts: list[str] = []
        self.title = ""
        self._open: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag in ("script", "title", "style"):
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
        elif where is None:
            self.text.append(data)


VIEWER_TAGS = {"html", "head", "meta", "title", "style", "script", "body", "h1", "div", "ul", "li", "input"}
VIEWER_TAGS |= {"button", "span", "main", "details", "summary", "pre"}
VIEWER_ATTRIBUTES = {"lang", "charset", "class", "id", "data-search", "open", "type", "placeholder"}
VIEWER_HANDLERS = {("input", "oninput"), ("button", "onclick")}
VIEWER_CLASSES = {"totals", "problems", "controls", "kind", "meta", "err", "label", "hidden"}
VIEWER_CLASSES |= {"tool", "cell", "sub_call", "event", "error"}


def assert_nothing_injected(page: Page, title: str) -> None:
    assert page.scripts == [SCRIPT], "a script that is not the viewer's own"
    assert page.title == title
    for tag, attrs in page.elements:
        assert tag in VIEWER_TAGS, (tag, attrs)
        handlers = {(tag, name) for name in attrs if name.startswith("on")}
        assert handlers <= VIEWER_HANDLERS, (tag, attrs)
        assert set(attrs) - {name for _, name in handlers} <= VIEWER_ATTRIBUTES, (tag, attrs)
        assert set((attrs.get("class") or "").split()) <= VIEWER_CLASSES, (tag, attrs)
        if tag == "details":
            assert re.fullmatch(r"n\d+", attrs["id"] or ""), attrs["id"]


def write_forged(tmp_path: Path) -> Path:
    trace = tmp_path / HOSTILE_DIR / "trace.jsonl"
    trace.parent.mkdir()
    trace.write_text("\n".join(forged_lines()) + "\n", encoding="utf-8", errors="surrogatepass")
    return trace


def test_a_forged_trace_renders_escaped_with_every_line_checked(tmp_path: Path) -> None:
    trace = write_forged(tmp_path)
    written = write_html(trace, tmp_path / "trace.html")
    source = (tmp_path / "trace.html").read_text(encoding="utf-8")
    assert source.count("<script") == 1 and "<img" not in source and "<svg" not in source
    handlers = re.findall(r"""\s(on[a-z]+\s*=\s*["'][^"']*["'])""", source.replace(SCRIPT, ""))
    assert handlers == ['oninput="search(this.value)"', 'onclick="setAll(true)"', 'onclick="setAll(false)"']
    page = Page(source)
    assert_nothing_injected(page, f"rlm-mcp trace: {HOSTILE_DIR}")
    text = "".join(page.text)
    for hostile in (f"<script>{PWN}</script>", f'<img src=x onerror="{PWN}">', f"</pre><script>{PWN}</script>"):
        assert hostile in text  # shown, as text
    assert f'type tool" ontoggle="{PWN}" x="' in text  # an unknown type is a generic event, its type shown
    ids = [attrs["id"] for tag, attrs in page.elements if tag == "details"]
    assert len(ids) == len(set(ids)) == written.events == 1 + 2 + 1 + 3 + 200  # every valid event, once
    for number, why in [(2, "id is not an integer"), (3, "not JSON"), (4, "not a JSON object"), (5, "not a JSON")]:
        assert f"line {number}: {why}" in text
    assert "line 8: event 7: parent is not an integer" in text and "line 9: id 1 repeated" in text
    assert "line 10: id is not an integer (true)" in text and "line 15: not JSON" in text
    assert "[900,000 more characters]" in text and len(source) < 600_000  # a huge text is shortened
    assert "0 in / 0 out tokens" in text and "cost unknown" in text  # numbers that are not numbers count as none
    depth = max(len(re.findall("<details", chunk)) for chunk in source.split("</details>"))
    assert depth <= 64  # endless nesting is cut into branches


def test_a_forged_trace_runs_no_injected_script_in_chromium(tmp_path: Path) -> None:
    chromium()
    control = tmp_path / "control.html"  # the check itself works: a page that does run the payloads
    control.write_text(f'<html><body><img src=x onerror="{PWN}"><details open ontoggle="{PWN}">x</details></body>')
    assert 'data-pwned="yes"' in dump_dom(control)

    trace = write_forged(tmp_path)
    page = tmp_path / "trace.html"
    done = subprocess.run([console_script(), "trace", str(trace), "-o", str(page)], capture_output=True, text=True)
    assert done.returncode == 0 and "(207 events)" in done.stdout, done.stderr
    assert "lines of the trace were skipped or changed" in done.stderr
    dom = Page(dump_dom(page, "#expand=6"))
    assert not [attrs for _, attrs in dom.elements if "data-pwned" in attrs]
    assert_nothing_injected(dom, f"rlm-mcp trace: {HOSTILE_DIR}")
    text = "".join(dom.text)
    assert f"<script>{PWN}</script>" in text and f"<img src=x onerror={PWN}> via </summary><script>" in text
