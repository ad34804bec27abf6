"""rlm_map and llm_map on a real Ray cluster: a head node started by the test on 127.0.0.1 (running from a
virtual environment of its own, as a user's cluster might), the corpus on a local HTTP server, the server in
memory starting its Ray driver process, as it would for a remote cluster.

The server process itself never imports Ray: the tests do not either, so `"ray" not in sys.modules` shows
that nothing a map produced was unpickled here."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from rlm_mcp.cluster import maps
from rlm_mcp.server import build_server
from testkit.fakes import FakeProvider
from testkit.ray_head import ENVIRONMENT, ray_head
from tests.conftest import make_settings, run, text_of, value_of

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="rlm_map and llm_map need Ray (pip install 'rlm-mcp[ray]'; .ci/run has it)",
    ),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    with ray_head(venv=True) as address:
        yield address


@pytest.fixture(autouse=True)
async def drivers_stopped() -> AsyncIterator[None]:
    """Each test's event loop ends with it: the drivers it started (whose pipes it holds) stop first."""
    yield
    for started in list(maps._clusters.values()):
        await started.stop()
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


def ray_not_loaded_here() -> bool:
    return "ray" not in sys.modules


# A compromised node: every process its Python starts runs this (a .pth file's import line), and from then on
# the map task returns an object whose __reduce__ runs code wherever Ray unpickles it.
COMPROMISED = """\
import importlib.abc, importlib.util, os, sys
class Payload:
    def __reduce__(self):
        code = "import os; open(%r, 'a').write('%%d %%s ' %% (os.getpid(), 'ANTHROPIC_API_KEY' in os.environ))"
        return (exec, (code % MARKER,))
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "rlm_mcp.cluster.pieces":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        original = spec.loader.exec_module
        def exec_module(module):
            original(module)
            module.run_function = lambda *args, **kwargs: {"value": Payload()}
        spec.loader.exec_module = exec_module
        return spec
sys.meta_path.insert(0, Hook())
"""


async def test_a_compromised_node_runs_nothing_in_the_server_and_a_dead_cluster_fails_the_map_only(
    web: tuple[str, Path], provider: FakeProvider, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every task of this cluster answers a pickle that runs code where it is loaded: it runs in the driver
    process, which holds no key, never in the server. Then the cluster dies: the map fails in one line, the
    session keeps its variables, and the server lives on."""
    base, served = web
    (served / "logs" / "one.log").write_text("x\n")
    marker = tmp_path / "unpickled"
    monkeypatch.setenv("RAY_gcs_rpc_server_reconnect_timeout_s", "3")  # the driver gives up on a dead head soon
    line = f"import sys; exec({'MARKER = ' + repr(str(marker)) + chr(10) + COMPROMISED!r}, {{}})"
    with contextlib.ExitStack() as head:
        address = head.enter_context(ray_head(pth=line))
        async with connect(tmp_path, data_dir, allow_url=[base], ray_address=address) as client:
            assert await value_of(client, "kept = 41; kept + 1") == "42"
            result = await run(client, COUNT + f"r = rlm_map(count_errors, {base + 'logs/*.log'!r})")
            assert result.structured_content["outcome"] == "ok", text_of(result)
            assert marker.exists(), text_of(await run(client, "r"))
            unpickled_by = marker.read_text().split()  # it did run, somewhere: in the driver, which holds no key
            assert unpickled_by[0] != str(os.getpid()) and unpickled_by[1] == "False", unpickled_by
            assert ray_not_loaded_here()
            driver = maps._clusters[address].pid
            assert driver is not None

            os.killpg(os.getpgid(driver), signal.SIGKILL)  # between maps: the next starts a new driver
            again = await run(client, COUNT + f"r = rlm_map(count_errors, {base + 'logs/*.log'!r})\nkept")
            assert again.structured_content["result"] == "41", text_of(again)  # a fresh driver, the same session
            assert maps._clusters[address].pid not in (None, driver)

            head.close()  # the whole cluster stops under the connected driver
            dead = await run(client, COUNT + f"rlm_map(count_errors, {base + 'logs/*.log'!r})")
            assert "Ray driver" in text_of(dead), text_of(dead)
            assert await value_of(client, "kept") == "41"
    assert ray_not_loaded_here()


def map_children() -> list[int]:
    """The locked-down children of map tasks running on this machine (its node), by their command line."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if b"rlm_mcp.worker.mapchild" in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
    return found


SLOW = "def slow(text, path):\n    import time\n    time.sleep(120)\n    return 1\n"


async def test_a_driver_killed_mid_map_fails_the_map_in_one_line_and_the_session_lives_on(
    cluster: str, web: tuple[str, Path], provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    base, served = web
    (served / "logs" / "one.log").write_text("x\n")
    outcome = {}
    async with connect(tmp_path, data_dir, allow_url=[base], ray_address=cluster) as client:
        assert await value_of(client, "kept = 41; kept + 1") == "42"

        async def mapping() -> None:
            outcome["result"] = await run(client, SLOW + f"rlm_map(slow, {base + 'logs/one.log'!r})")

        async with anyio.create_task_group() as group:
            group.start_soon(mapping)
            with anyio.fail_after(60):
                while not map_children():  # the function runs on the node
                    await anyio.sleep(0.1)
            driver = maps._clusters[cluster].pid
            assert driver is not None
            os.killpg(os.getpgid(driver), signal.SIGKILL)
        said = text_of(outcome["result"])
        assert "the Ray driver exited" in said and "the next map starts a new driver" in said, said
        assert await value_of(client, "kept") == "41"
        with anyio.fail_after(30):  # Ray ends a dead driver's tasks; their children die with them
            while map_children():
                await anyio.sleep(0.2)
        again = await run(client, COUNT + f"list(rlm_map(count_errors, {base + 'logs/one.log'!r}).values())")
        assert again.structured_content["result"] == str([{"errors": 0, "lines": 1}]), text_of(again)
    assert not dead_tasks_scratch()  # the killed task's directory went with the next task
    assert ray_not_loaded_here()


def dead_tasks_scratch() -> list[str]:
    """Scratch directories of map tasks whose process is gone (on this machine, the test's node)."""
    left = []
    for entry in os.listdir(tempfile.gettempdir()):
        owner = entry.removeprefix("rlm-map-").partition("-")[0]
        if entry.startswith("rlm-map-") and owner.isdigit() and not Path(f"/proc/{owner}").exists():
            left.append(entry)
    return left


ESCAPES = """\
def escape(text, path):
    import os, signal, site, socket, subprocess, sys
    tried = {"scratch_dir": os.getcwd()}
    def attempt(name, action):
        try:
            action()
            tried[name] = "done"
        except BaseException as exc:
            tried[name] = f"{type(exc).__name__}: {exc}"
    def plant():
        with open(os.path.join(site.getsitepackages()[0], "zz_planted.pth"), "w") as handle:
            handle.write("import os\\n")
    attempt("environ", lambda: open(f"/proc/{os.getppid()}/environ", "rb").read())
    attempt("connect", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=5).close())
    attempt("process", lambda: subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", MARKER]))
    attempt("fork", lambda: os.fork() or os._exit(0))
    attempt("outside", lambda: open(OUTSIDE, "w").write("escaped"))
    attempt("secret", lambda: open(SECRET).read())
    attempt("pth", plant)
    attempt("scratch", lambda: open("mine.txt", "w").write("mine"))
    KILL
    return tried
"""


async def test_the_mapped_function_runs_locked_down_on_the_node(
    cluster: str, web: tuple[str, Path], provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    """No reading the task's environment or the node's files, no network, no processes, writes only in its
    scratch directory (not the node's Python installation), no signals to the task; nothing it made outlives
    the task."""
    from rlm_mcp.worker.lockdown import landlock

    base, served = web
    (served / "logs" / "one.log").write_text("x\n")
    outside = tmp_path / "escaped.txt"
    secret = tmp_path / "node-credentials"
    secret.write_text("aws_secret_access_key = not-for-the-model")
    secret.chmod(0o644)
    marker = f"rlm-map-escape-{os.getpid()}"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        code = ESCAPES.replace("PORT", str(listener.getsockname()[1]))
        code = code.replace("MARKER", repr(marker)).replace("OUTSIDE", repr(str(outside)))
        code = code.replace("SECRET", repr(str(secret)))
        signals_scoped = landlock.abi_version() >= 6  # Linux 6.12+; before, a same-user kill is not refused
        code = code.replace("KILL", 'attempt("kill", lambda: os.kill(os.getppid(), signal.SIGKILL))' * signals_scoped)
        async with connect(tmp_path, data_dir, allow_url=[base], ray_address=cluster) as client:
            result = await run(client, code + f"r = rlm_map(escape, {base + 'logs/one.log'!r})")
            assert result.structured_content["outcome"] == "ok", text_of(result)
            tried = ast.literal_eval(await value_of(client, "list(r.values())[0]"))
        with pytest.raises(BlockingIOError):
            listener.accept()  # no connection came
    assert isinstance(tried, dict), tried
    for name in ("environ", "connect", "process", "fork", "outside", "secret", "pth"):
        assert tried[name].startswith(("PermissionError", "OSError")), (name, tried[name])
    assert "network access is disabled" in tried["connect"] and "starting processes is disabled" in tried["process"]
    assert tried["scratch"] == "done"
    if signals_scoped:
        assert tried["kill"].startswith("PermissionError"), tried["kill"]
    assert not outside.exists()
    assert not Path(tried["scratch_dir"]).exists()  # the scratch directory went with the task
    assert not any(marker.encode() in _cmdline(entry) for entry in os.listdir("/proc") if entry.isdigit())
    assert ray_not_loaded_here()


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


async def test_the_layers_a_node_does_not_apply_are_said_with_the_results(
    cluster: str, web: tuple[str, Path], provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    """With RLM_MCP_SANDBOX=off the node's child applies no layer, and the map's output says so."""
    base, served = web
    (served / "logs" / "one.log").write_text("ERROR x\n")
    async with connect(tmp_path, data_dir, allow_url=[base], ray_address=cluster, sandbox="off") as client:
        result = await run(client, COUNT + f"list(rlm_map(count_errors, {base + 'logs/one.log'!r}).values())")
        assert result.structured_content["result"] == str([{"errors": 1, "lines": 1}]), text_of(result)
        assert "sandbox gaps on the cluster's nodes: all layers (RLM_MCP_SANDBOX=off)" in text_of(result)
