"""Child RLMs end to end: rlm_query in the client's REPL -> a child session with its own sandboxed worker,
driven by a scripted root model on loopback (Anthropic Messages tool use, or chat completions tool calls)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from testkit.fakes import FakeProvider
from testkit.roots import ScriptedRoot, code
from tests.conftest import load, make_settings, run, text_of

pytestmark = pytest.mark.anyio


def printed(prompt: str) -> str:
    """What the child's last cell printed (the tool result's first line)."""
    return prompt.splitlines()[0] if prompt else ""


@pytest.fixture(params=["anthropic", "openai"])
async def provider(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeProvider]:
    """The fake provider, with tool use in the format of the backend under test (sub-calls answer `sub:...`)."""
    root = ScriptedRoot({}, sub_answer=lambda prompt, system, model: f"sub:{prompt[-40:]}")
    async with FakeProvider.running(answer=root) as fake:
        fake.root = root  # type: ignore[attr-defined]
        if request.param == "anthropic":
            monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
            monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
            fake.overrides = {}  # type: ignore[attr-defined]
        else:
            monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
            fake.overrides = {"openai_base_url": fake.openai_base_url, "sub_model": "gpt-4o-mini"}  # type: ignore[attr-defined]
        yield fake


def scripts(provider: FakeProvider) -> dict[str, Any]:
    return provider.root.scripts  # type: ignore[attr-defined,no-any-return]


def connect(provider: FakeProvider, tmp_path: Path, data_dir: Path, **overrides: Any) -> Client:
    overrides = {"retry_base_s": 0.01, **provider.overrides, **overrides}  # type: ignore[attr-defined]
    return Client(build_server(make_settings(tmp_path, data_dir, **overrides)))


async def out(client: Client, source: str) -> str:
    result = await run(client, source)
    data = result.structured_content
    assert data is not None and data["outcome"] == "ok", text_of(result)
    return str(data["stdout"]).strip()


async def test_a_child_runs_code_in_a_repl_of_its_own_and_answers(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    scripts(provider)["How many lines"] = [
        code("n = len(context.splitlines())\nprint(n, 'parent_secret' in globals(), type(context).__name__)"),
        lambda told: f"{printed(told)} lines",
    ]
    async with connect(provider, tmp_path, data_dir) as client:
        await run(client, "parent_secret = 1")
        source = "r = rlm_query('How many lines?', 'a\\nb\\nc')\nprint(repr(str(r)), r.partial, r.stopped)"
        said = await out(client, source)
        assert said == "'3 False str lines' False answered"
    assert len(provider.root.conversations) == 2  # type: ignore[attr-defined]  # a turn with the tool call, one answer


async def test_an_answer_variable_ends_the_child(provider: FakeProvider, tmp_path: Path, data_dir: Path) -> None:
    scripts(provider)["Sum"] = [code("answer = str(sum(context))"), "never said"]
    async with connect(provider, tmp_path, data_dir) as client:
        said = await out(client, "r = rlm_query('Sum these', [1, 2, 3])\nprint(r, r.stopped, r.partial)")
    assert said == "6 answer variable False"


INNER = "import os\nos.environ['RLM_MCP_MAX_DEPTH'] = '9'\nos.environ['RLM_MCP_DEPTH'] = '0'\n"


async def test_the_depth_cap_holds_whatever_the_repl_changes(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    """At --max-depth 2 a child's rlm_query is a plain sub-call, and says so; environment variables, the
    REPL's names and a forged frame (the REPL can reach its channel) change nothing: depth lives in the server."""
    forge = (
        "channel = [c.cell_contents for c in rlm_query_batched.__closure__ if hasattr(c.cell_contents, 'request')][0]\n"
        "reply = channel.request({'op': 'rlm', 'depth': 0, 'max_depth': 9, 'children': "
        "[{'prompt': 'forged inner', 'context': None, 'model': None, 'max_iterations': None, 'timeout_s': None}]})\n"
    )
    scripts(provider)["Outer"] = [
        code(INNER + "depth = 0\nmax_depth = 9\nr = rlm_query('Inner question', 'ctx')\nprint(r.stopped, '|', r)"),
        code(forge + "print(reply['results'][0]['stopped'])"),
        lambda told: f"outer saw: {printed(told)}",
    ]
    scripts(provider)["Inner question"] = ["a child's answer, which must not happen at the cap"]
    async with connect(provider, tmp_path, data_dir) as client:
        said = await out(client, "r = rlm_query('Outer')\nprint(r)")
    assert said == "outer saw: plain sub-call"
    first_result = provider.root.conversations[1]  # type: ignore[attr-defined]
    assert "plain sub-call | sub:" in json.dumps(first_result)
    assert "at depth 2 of 2 (--max-depth)" in json.dumps(first_result)  # and the child is told why
    roots = {_question(messages) for messages in provider.root.conversations}  # type: ignore[attr-defined]
    assert roots == {"Outer"}  # no conversation ever started for the inner or the forged question


async def test_at_max_depth_1_rlm_query_is_a_plain_sub_call(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    async with connect(provider, tmp_path, data_dir, max_depth=1) as client:
        result = await run(client, "r = rlm_query('q', {'a': 'x'})\nprint(r.stopped, r)")
        assert "plain sub-call sub:" in text_of(result)
        assert "at depth 1 of 1 (--max-depth)" in text_of(result)
    assert provider.root.conversations == []  # type: ignore[attr-defined]


async def test_depth_3_nests_a_grandchild(provider: FakeProvider, tmp_path: Path, data_dir: Path) -> None:
    scripts(provider)["Level two"] = [code("print(rlm_query('Level three', context[:5]))"), lambda told: printed(told)]
    scripts(provider)["Level three"] = [code("print(context.upper())"), lambda told: f"deep {printed(told)}"]
    async with connect(provider, tmp_path, data_dir, max_depth=3) as client:
        assert await out(client, "print(rlm_query('Level two', 'hello world'))") == "deep HELLO"


def _question(messages: list[Any]) -> str:
    first = next(m for m in messages if m["role"] == "user")["content"]
    return first if isinstance(first, str) else "".join(block.get("text", "") for block in first)


async def test_siblings_share_the_budget_and_never_overshoot_it(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    """Ten calls for the whole session: four children each reserve an equal share before any starts, then
    each tries to spend far more (sub-calls in a loop, concurrently); together they stay within ten."""
    provider.jitter = (0.0, 0.05)
    greedy = "for _ in range(5):\n    llm_query_batched([f'x{i}' for i in range(8)])\n"
    scripts(provider)["Greedy"] = [code(greedy), code(greedy), "done"]
    async with connect(provider, tmp_path, data_dir, max_sub_calls=10) as client:
        result = await run(
            client, "rs = rlm_query_batched([f'Greedy {i}' for i in range(4)])\nprint([type(r).__name__ for r in rs])"
        )
        assert result.structured_content is not None, text_of(result)
        usage = json.loads((await client.read_resource("rlm://session/usage")).contents[0].text)  # type: ignore[union-attr]
    assert provider.count <= 10
    assert usage["total"]["calls"] == provider.count  # the children's calls count as the parent's
    assert len(usage["children"]) == 4
    assert {child["stopped"] for child in usage["children"]} <= {"budget", "answered", "iterations"}
    assert sum(child["usage"]["calls"] for child in usage["children"]) == provider.count


async def test_a_child_that_never_answers_stops_at_its_turns_with_a_partial_answer(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    scripts(provider)["Endless"] = [code("x = 1"), code("x = 2"), code("x = 3"), "my best guess so far"]
    async with connect(provider, tmp_path, data_dir, child_max_iterations=5) as client:
        source = "r = rlm_query('Endless', max_iterations=3)\nprint(r.partial, r.stopped, r.iterations, r)"
        said = await out(client, source)
    assert said == "True iterations 3 my best guess so far"
    last = provider.root.conversations[-1]  # type: ignore[attr-defined]
    assert "used every turn" in json.dumps(last)
    assert len(provider.root.conversations) == 4  # type: ignore[attr-defined]  # three turns, then one without tools


async def test_max_iterations_cannot_raise_the_servers_cap(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    scripts(provider)["Endless"] = [code("x = 1"), code("x = 2"), code("x = 3"), "guess"]
    async with connect(provider, tmp_path, data_dir, child_max_iterations=2) as client:
        assert await out(client, "print(rlm_query('Endless', max_iterations=50).iterations)") == "2"


async def test_a_child_whose_worker_crashes_goes_on_in_a_new_one(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    scripts(provider)["Crash"] = [
        code("import os\nos._exit(3)"),
        code("print(len(context))"),
        lambda told: f"context still there: {printed(told)}",
    ]
    async with connect(provider, tmp_path, data_dir) as client:
        assert await out(client, "print(rlm_query('Crash', 'abcd'))") == "context still there: 4"
    crash_result = json.dumps(provider.root.conversations[1])  # type: ignore[attr-defined]
    assert "crashed" in crash_result


async def test_batched_children_come_back_in_order_and_a_failure_is_an_item(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    provider.jitter = (0.0, 0.1)
    scripts(provider)["Echo"] = [code("print(context)"), lambda told: f"echo {printed(told)}"]
    outside = tmp_path / "outside.txt"  # the worker cannot read it, but names it as a mapped file's path
    outside.write_text("not under a root")
    async with connect(provider, tmp_path, data_dir, max_children=2) as client:
        said = await out(
            client,
            "from rlm_mcp.worker.mapped import MappedText\n"
            "class Forged(MappedText):\n"
            "    def __init__(self, path):\n"
            "        self.path = path\n"
            f"bad = Forged({str(outside)!r})\n"
            "rs = rlm_query_batched([f'Echo {i}' for i in range(5)], ['c0', 'c1', bad, 'c3', 'c4'])\n"
            "print([str(r) if not isinstance(r, RLMError) else 'ERR' for r in rs])\n"
            "print(rs[2])",
        )
    first, why = said.splitlines()
    assert first == "['echo c0', 'echo c1', 'ERR', 'echo c3', 'echo c4']"
    assert "could not be loaded" in why and "outside" in why


async def test_a_loaded_file_is_mapped_again_in_the_child(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    big = data_dir / "big.log"
    big.write_text("line\n" * 400_000)  # 2 MB: mapped at a 1 MiB threshold
    scripts(provider)["Kind"] = [code("print(type(context).__name__, len(context))"), lambda told: printed(told)]
    async with connect(provider, tmp_path, data_dir, mmap_threshold_mb=1) as client:
        await load(client, path=str(big), name="logs")
        assert await out(client, "print(rlm_query('Kind', logs))") == "MappedText 2000000"
    sent = [request for request in provider.requests if "tools" in (request.body or {})]
    assert all(len(json.dumps(request.body)) < 100_000 for request in sent)  # the file never went through a prompt


async def test_a_context_that_is_not_data_gets_a_clear_error(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    async with connect(provider, tmp_path, data_dir) as client:
        result = await run(client, "rlm_query('q', object())")
        assert "TypeError" in text_of(result) and "a child's context is a str" in text_of(result)
        assert await out(client, "print('still fine')") == "still fine"


async def test_the_trace_nests_each_child_under_its_parents_cell(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    scripts(provider)["Traced"] = [code("print(llm_query('inner'))"), lambda told: f"got {printed(told)}"]
    async with connect(provider, tmp_path, data_dir) as client:
        result = await run(client, "print(rlm_query('Traced', 'ctx'))")
        summary = result.structured_content["sub_calls"]  # type: ignore[index]
        trace = (await client.read_resource("rlm://session/trace")).contents[0].text  # type: ignore[union-attr]
    events = {event["id"]: event for event in map(json.loads, trace.splitlines())}
    (child,) = [event for event in events.values() if event["type"] == "rlm"]
    assert events[child["parent"]]["type"] == "cell"
    under = [event for event in events.values() if _ancestors(events, event, child["id"])]
    kinds = sorted(event["type"] for event in under)
    assert kinds.count("root_call") == 2 and kinds.count("sub_call") == 1 and "cell" in kinds
    assert child["outcome"] == "answered" and child["level"] == 2
    assert summary["calls"] == 3  # two root turns and the child's sub-call, counted in the parent's cell
    assert re.search(r"Sub-calls: 3 calls", text_of(result))


def _ancestors(events: dict[int, Any], event: dict[str, Any], wanted: int) -> bool:
    parent = event.get("parent")
    while parent is not None:
        if parent == wanted:
            return True
        parent = events[parent].get("parent")
    return False
