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

from rlm_mcp.server import build_server
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
        said = await out(client, "r = rlm_query('How many lines?', 'a\\nb\\nc')\nprint(repr(str(r)), r.partial, r.stopped)")
        assert said == "'3 False str lines' False answered"
    roots = [m for m in provider.root.conversations]  # type: ignore[attr-defined]
    assert len(roots) == 2  # one turn with the tool call, one with the answer


async def test_an_answer_variable_ends_the_child(provider: FakeProvider, tmp_path: Path, data_dir: Path) -> None:
    scripts(provider)["Sum"] = [code("answer = str(sum(context))"), "never said"]
    async with connect(provider, tmp_path, data_dir) as client:
        said = await out(client, "r = rlm_query('Sum these', [1, 2, 3])\nprint(r, r.stopped, r.partial)")
    assert said == "6 answer variable False"
