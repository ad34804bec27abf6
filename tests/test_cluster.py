"""rlm_map and llm_map on a real Ray cluster: a head node started by the test on 127.0.0.1, the corpus on a
local HTTP server, the server in memory joining the cluster as a driver, as it would a remote one."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.cluster import maps
from rlm_mcp.server import build_server
from testkit.fakes import FakeProvider
from testkit.ray_head import ENVIRONMENT, ray_head
from tests.conftest import make_settings, run, text_of, value_of

pytestmark = pytest.mark.anyio
ray = pytest.importorskip("ray", reason="rlm_map and llm_map need Ray (pip install 'rlm-mcp[ray]'; .ci/run has it)")


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with ray_head() as address:
        try:
            yield address
        finally:
            if ray.is_initialized():
                ray.shutdown()
            maps._clusters.clear()


@pytest.fixture
async def provider(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeProvider]:
    async with FakeProvider.running(answer=lambda prompt, system, model: f"summary of {len(prompt)} chars") as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        for name, value in ENVIRONMENT.items():
            monkeypatch.setenv(name, value)
        yield fake


def connect(tmp_path: Path, data_dir: Path, **overrides: Any) -> Client:
    return Client(build_server(make_settings(tmp_path, data_dir, retry_base_s=0.01, **overrides)))


COUNT = """\
def count_errors(text, path):
    import re
    return {"errors": len(re.findall(r"^ERROR", text, re.M)), "lines": text.count("\\n")}
"""


async def test_rlm_map_runs_the_function_on_the_cluster_and_brings_back_only_results(
    cluster: str, web: tuple[str, Path], provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    base, served = web
    for day in range(1, 5):
        (served / "logs" / f"day{day}.log").write_text("INFO ok\n" * 100 + "ERROR disk\n" * day)
    async with connect(tmp_path, data_dir, allow_url=[base], ray_address=cluster) as client:
        result = await run(
            client, COUNT + f"counts = rlm_map(count_errors, {base + 'logs/*.log'!r})\nlist(counts.values())"
        )
        assert result.structured_content["outcome"] == "ok", text_of(result)
        assert result.structured_content["result"] == str([{"errors": day, "lines": 100 + day} for day in range(1, 5)])
        assert await value_of(client, "list(counts)[0]") == repr(base + "logs/day1.log")
        bad = (
            "def broken(text, path):\n    if path.endswith('day2.log'):\n        raise ValueError('no')\n    return 1\n"
        )
        mixed = await run(
            client, bad + f"r = rlm_map(broken, {base + 'logs/*.log'!r})\n[type(v).__name__ for v in r.values()]"
        )
        assert mixed.structured_content["result"] == "['int', 'MapError', 'int', 'int']", text_of(mixed)
        said = await value_of(client, "str(r[" + repr(base + "logs/day2.log") + "])")
        assert "ValueError: no" in said and "after 2 retries" in said


async def test_llm_map_asks_through_the_sessions_one_budget(
    cluster: str, web: tuple[str, Path], provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    base, served = web
    for index in range(5):
        (served / "logs" / f"part{index}.txt").write_text(f"part {index} " * 50)
    async with connect(tmp_path, data_dir, allow_url=[base], ray_address=cluster, max_sub_calls=3) as client:
        result = await run(client, f"a = llm_map('Summarise {{path}}:\\n{{text}}', {base + 'logs/*.txt'!r})\n"
                                   "sum(isinstance(v, str) for v in a.values())")  # fmt: skip
        assert result.structured_content["result"] == "3", text_of(result)  # the budget held across the fan-out
        assert result.structured_content["sub_calls"]["calls"] == 3
        assert "budget exhausted" in await value_of(
            client, "str([v for v in a.values() if isinstance(v, LLMError)][0])"
        )
    assert provider.count == 3
    assert all(request.prompt.startswith(f"Summarise {base}logs/part") for request in provider.requests)


async def test_without_a_cluster_a_map_says_what_to_set(web: tuple[str, Path], tmp_path: Path, data_dir: Path) -> None:
    base, _ = web
    async with connect(tmp_path, data_dir, allow_url=[base]) as client:
        refused = await run(client, COUNT + f"rlm_map(count_errors, {base!r})")
        assert "RLM_MCP_RAY_ADDRESS=host:port" in text_of(refused)
        assert await value_of(client, "1 + 1") == "2"


async def test_nothing_the_mapped_function_makes_is_unpickled_in_the_server(
    cluster: str, web: tuple[str, Path], provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    """A result or an exception with a __reduce__ would run code wherever it is unpickled: the function's
    process answers JSON, which the task parses into plain values before Ray carries them back."""
    base, served = web
    (served / "logs" / "one.log").write_text("x\n")
    marker = tmp_path / "unpickled-in-the-server"
    hostile = f"""\
def hostile(text, path):
    import os
    class Payload(dict):
        def __reduce__(self):
            return (os.system, ("touch {marker}",))
    class Boom(Exception):
        def __reduce__(self):
            return (os.system, ("touch {marker}",))
    if path.endswith("two.log"):
        raise Boom("no")
    return Payload(answer=42)
"""
    (served / "logs" / "two.log").write_text("y\n")
    async with connect(tmp_path, data_dir, allow_url=[base], ray_address=cluster) as client:
        listing = "[(type(v).__name__, str(v)) for v in r.values()]"
        result = await run(client, hostile + f"r = rlm_map(hostile, {base + 'logs/*.log'!r})\n" + listing)
        assert result.structured_content["outcome"] == "ok", text_of(result)
        (first, second) = ast.literal_eval(result.structured_content["result"])  # plain tuples of str
        assert first == ("dict", "{'answer': 42}"), text_of(result)
        assert second[0] == "MapError" and "Boom: no" in second[1] and "after 2 retries" in second[1]
    assert not marker.exists()
