"""rlm-mcp inside the real Claude Code CLI: what the root model really receives.

The CLI (npm @anthropic-ai/claude-code, pinned in tests/claude_host.py, installed by .ci/run) launches
rlm-mcp over stdio and talks to a scripted root model on 127.0.0.1; the test reads the tool results in the
requests the host sends back, which is exactly what a model would read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testkit.clis import CLAUDE_VERSION, find_claude
from tests.claude_host import ScriptedRoot, run_claude, serving
from tests.test_stdio import console_script

CLAUDE = find_claude()
pytestmark = pytest.mark.skipif(
    CLAUDE is None,
    reason=f"the Claude Code CLI (npm @anthropic-ai/claude-code@{CLAUDE_VERSION}) is not installed: .ci/run "
    "installs it in ~/.cache/rlm-mcp-test-npm",
)
TOOLS = ["mcp__rlm__load_context", "mcp__rlm__run_code", "mcp__rlm__sub_query"]


def text_of_result(content: object) -> str:
    """A tool result's text as the host put it in the model's context."""
    if isinstance(content, str):
        return content
    assert isinstance(content, list), content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))


def test_what_the_model_reads_through_claude_code(tmp_path: Path, data_dir: Path) -> None:
    line = "2026-11-30 12:00:00 INFO request served in 12 ms by worker 7 of the pool\n"
    (data_dir / "service.log").write_text(line * (20_000_000 // len(line)))
    root = ScriptedRoot(
        calls=[
            ("ToolSearch", {"query": "select:" + ",".join(TOOLS)}),  # MCP tools are deferred: load them first
            ("mcp__rlm__run_code", {"code": "1 + 1"}),
            ("mcp__rlm__load_context", {"path": "service.log"}),
            ("mcp__rlm__run_code", {"code": "print('x' * 10_000_000)"}),
            ("mcp__rlm__run_code", {"code": "import time\ntime.sleep(4)\nprint('slept')"}),  # past --wait-s
            ("mcp__rlm__run_code", {"wait_s": 30}),  # no code: wait for the running cell
        ]
    )
    args = ["--root", str(data_dir), "--workspace", str(tmp_path / "ws"), "--wait-s", "2"]
    server = {"command": console_script(), "args": args}
    assert CLAUDE is not None
    with serving(root) as url:
        done = run_claude(CLAUDE, url, tmp_path / "home", {"rlm": server}, TOOLS)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert json.loads(done.stdout)["result"] == "done"

    _, trivial, loaded, printed, running, finished = (text_of_result(content) for content in root.tool_results)
    assert trivial.startswith("Out: 2\n[ok, state kept,") and len(trivial) <= 100, trivial
    assert "19,999,956 chars" in loaded and len(loaded) <= 450, loaded
    assert "10,000,001" in printed and len(printed) <= 8_600, printed[-300:]
    assert running.startswith("[cell 3 running for 2 s: it goes on; run_code() without code waits"), running
    assert finished.startswith("slept\n[ok, state kept, 4."), finished
    # Claude Code's own last request (the server's distillation at close may come later, to the same fake).
    sent = json.dumps(next(request for request in reversed(root.requests) if "tools" in request))
    assert "# MCP Server Instructions" in sent and "Use rlm-mcp instead of reading files yourself" in sent


def test_the_analyze_prompt_is_a_slash_command(tmp_path: Path, data_dir: Path) -> None:
    root = ScriptedRoot(calls=[])
    server = {"command": console_script(), "args": ["--root", str(data_dir), "--workspace", str(tmp_path / "ws")]}
    assert CLAUDE is not None
    with serving(root) as url:
        command = '/mcp__rlm__analyze logs/app.log "Which errors recur?"'
        done = run_claude(CLAUDE, url, tmp_path / "home", {"rlm": server}, TOOLS, prompt=command)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (asked,) = [request for request in root.requests if request.get("tools")]
    sent = json.dumps(asked["messages"])
    assert "Work the Recursive Language Model way" in sent and "logs/app.log" in sent and "Which errors recur?" in sent


def test_claude_code_over_http_keeps_its_state_in_the_session_its_config_names(tmp_path: Path, data_dir: Path) -> None:
    from tests.test_http import TOKEN, start_server

    process, url = start_server(tmp_path, data_dir, "--auth-token", TOKEN, structured=False)
    server = {"type": "http", "url": url, "headers": {"Authorization": f"Bearer {TOKEN}", "X-RLM-Session": "work"}}
    assert CLAUDE is not None
    try:
        results = []
        for code in ("x = 41", "print(x + 1)"):  # two host processes: no MCP session, no handle carried over
            root = ScriptedRoot(
                calls=[("ToolSearch", {"query": "select:mcp__rlm__run_code"}), ("mcp__rlm__run_code", {"code": code})]
            )
            with serving(root) as base_url:
                done = run_claude(CLAUDE, base_url, tmp_path / "home", {"rlm": server}, TOOLS)
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            results.append(text_of_result(root.tool_results[-1]))
        assert results[1].startswith("42\n"), results
    finally:
        process.terminate()
        process.wait(10)


def test_the_plugin_passes_claude_plugin_validate() -> None:
    import subprocess

    from rlm_mcp import __version__

    plugin = Path(__file__).resolve().parents[1] / "plugin"
    assert CLAUDE is not None
    done = subprocess.run([CLAUDE, "plugin", "validate", "--json", str(plugin)], capture_output=True, text=True)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["success"], done.stdout[-2000:]
    assert [server["name"] for server in report["provides"]["mcpServers"]] == ["rlm"]
    assert report["provides"]["skills"] == ["rlm:rlm"]
    assert not [finding for finding in report["directory"]["findings"] if finding["blocking"]]
    assert json.loads((plugin / ".claude-plugin" / "plugin.json").read_text())["version"] == __version__
