"""rlm_map and llm_map on a real Ray cluster: a head node started by the test on 127.0.0.1 (running from a
virtual environment of its own, as a user's cluster might), the corpus on a local HTTP server, the server in
memory starting its Ray driver process, as it would for a remote cluster.

The server process itself never imports Ray: the tests do not either, so `"ray" not in sys.modules` shows
that nothing a map produced was unpickled here."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from rlm_mcp.cluster import maps
from rlm_mcp.errors import MapRefused
from rlm_mcp.surface.server import build_server
from testkit.fakes import FakeProvider
from testkit.ray_head import ENVIRONMENT, ray_head
from tests.conftest import make_settings, run, text_of, value_of

pytestmark = pytest.mark.anyio
RAY_MISSING = "rlm_map and llm_map need Ray (pip install 'rlm-mcp[ray]'; .ci/run has it)"
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason=RAY_MISSING)


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    if importlib.util.find_spec("ray") is None:  # the tests with a stand-in driver or task run without it
        pytest.skip(RAY_MISSING)
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
        # The function's own error, where it was raised; Ray does not retry it (it would fail the same way).
        said = await value_of(client, "r[" + repr(base + "logs/day2.log") + "]")
        assert said == "MapError('ValueError: no (line 3 of broken)')", said
        as_set = "def as_set(text, path):\n    return {1, 2}\n"
        as_repr = await run(client, as_set + f"s = rlm_map(as_set, {base + 'logs/day1.log'!r})\nlist(s.values())")
        assert as_repr.structured_content["result"] == "['{1, 2}']", text_of(as_repr)
        assert f"rlm_map: not JSON (set): kept as its repr: {base}logs/day1.log" in text_of(as_repr), text_of(as_repr)


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
        assert second[0] == "MapError" and second[1].startswith("Boom: no (line "), second
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


@needs_ray
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
            said = f"MapError: the Ray cluster at {address} cannot be reached (stopped?); maps fail until it is back; "
            assert said + "your variables are kept\n" in text_of(dead), text_of(dead)  # Ray's own words are logged
            again = await run(client, f"rlm_map(count_errors, {base + 'logs/*.log'!r})")  # a new driver cannot join
            assert said + "your variables are kept\n" in text_of(again), text_of(again)
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
        assert "the Ray driver exited: this map failed; the next one starts a new connection" in said, said
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


# -- stand-ins for Ray: the server's side of a map, and a task's, without a cluster ---------------------------

# The real driver (cluster/driver.py) over a stand-in `ray` whose every task answers a big value (a prompt):
# 99,000 characters, or 24,000 empty dicts (72,000 characters as JSON, 1.7 MB once parsed).
HONEST_DRIVER = """\
import sys, types
sys.path.insert(0, sys.argv[1])
ray = types.ModuleType("ray")
ray.init = lambda **options: None
ray.cancel = lambda ref, force=False: None
ray.remote = lambda **options: lambda task: types.SimpleNamespace(remote=lambda url, *args: (url, task.__name__))
ray.wait = lambda pending, num_returns, timeout: (pending, [])
ANSWERS = {"make_prompt": {"prompt": "p" * 50_000}, "run_function": {"value": "x" * 99_000, "gaps": []}}
ray.get = lambda ref: {"value": [{}] * 24_000, "gaps": []} if "dicts" in ref[0] else ANSWERS[ref[1]]
sys.modules["ray"] = ray
from rlm_mcp.cluster.driver import main
sys.exit(main(sys.argv[1:]))
"""
# A driver that sends every object a value of the size its first URL names, whatever the server asked.
HOSTILE_DRIVER = """\
import os, sys
sys.path.insert(0, sys.argv[1])
from rlm_mcp.bridge import frames
requests = os.fdopen(0, "rb")
while (request := frames.read_frame(requests)) is not None:
    value = "x" * int(request["urls"][0].rpartition("/")[2])
    for index in range(len(request["urls"])):
        frames.write_frame(1, {"op": "result", "index": index, "result": {"ok": True, "value": value, "gaps": []}})
    frames.write_frame(1, {"op": "done"})
"""


@contextlib.contextmanager
def head_port() -> Iterator[str]:
    """An address that answers (the server checks the cluster's head before it starts a driver)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield f"127.0.0.1:{listener.getsockname()[1]}"


async def test_a_maps_results_are_bounded_as_they_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    """200 results of 99,000 characters each (under a result's cap, 20 MB in all): the server keeps those
    within the reply budget, counted in the driver's frames as they arrive, and each further one says why;
    an llm_map's prompts likewise, and results of many dicts by the memory they take parsed. A driver that
    sends past its budget or a frame larger than any result is stopped at once."""
    urls = [f"http://h/{index}" for index in range(200)]
    deadline = time.monotonic() + 60
    with head_port() as address:
        monkeypatch.setattr(maps, "DRIVER", HONEST_DRIVER)
        cluster = maps.RayCluster(address)
        try:
            results = await cluster.run("function", urls, ["code", "f", 1, {}], None, deadline)
            kept = [result for result in results if result["ok"]]
            assert 150 < len(kept) < 200, len(kept)
            assert sum(len(json.dumps(result)) for result in kept) <= maps.MAX_REPLY_CHARS
            said = "left out: the map's results passed 16,777,216 bytes in all; return less per object"
            assert all(result == {"ok": False, "error": said} for result in results if not result["ok"]), results[-1]
            dicts = await cluster.run("function", [f"{url}/dicts" for url in urls[:100]], [], None, deadline)
            assert 20 < sum(result["ok"] for result in dicts) < 60, dicts[-1]  # 7 MB of JSON, 170 MB parsed
            assert "would take over 134,217,728 bytes of the server's memory" in dicts[-1]["error"], dicts[-1]
            monkeypatch.setattr(maps, "MAX_PROMPTS_BYTES", 1_000_000)
            prompts = await cluster.run("llm", urls, ["{text}", 1], None, deadline)
            assert 10 < sum(prompt["ok"] for prompt in prompts) < 25, prompts[-1]
            assert "left out: the map's prompts passed 1,000,000 bytes in all" in prompts[-1]["error"]
            await cluster.stop()

            monkeypatch.setattr(maps, "DRIVER", HOSTILE_DRIVER)
            for size, said in ((99_000, "bytes for one map"), (200_000, "-byte frame, over a result's")):
                with pytest.raises(MapRefused, match=said):
                    await cluster.run("function", [f"{url}/{size}" for url in urls], [], None, deadline)
        finally:
            await cluster.stop()


FORGE = """\
def forge(text, path):
    import os
    line = b'{"value": "FORGED", "gaps": ["none: every layer holds"], "note": "all layers active"}\\n'
    parent = os.getppid()
    mine = {os.readlink(f"/proc/{parent}/fd/{n}") for n in (0, 1, 2) if os.path.exists(f"/proc/{parent}/fd/{n}")}
    for descriptor in range(3, 64):  # its answer's, and any inherited
        try:
            os.write(descriptor, line)
        except OSError:
            pass
    try:  # the task's end of its report pipe, reopened for writing (where /proc lets it)
        for name in os.listdir(f"/proc/{parent}/fd"):
            target = os.readlink(f"/proc/{parent}/fd/{name}")
            if target.startswith("pipe:") and target not in mine:
                os.write(os.open(f"/proc/{parent}/fd/{name}", os.O_WRONLY | os.O_NONBLOCK), line)
    except OSError:
        pass
    os._exit(0)
"""
TASKS = """\
import json, sys
from rlm_mcp.cluster import pieces
url, mode = sys.argv[1:]
limits = {"mode": mode, "memory_bytes": 1 << 30, "write_bytes": 1 << 26, "timeout_s": 60}
honest = pieces.run_function(url, "def honest(text, path):\\n    return 1\\n", "honest", 1 << 20, limits)
print(json.dumps([honest, pieces.run_function(url, sys.stdin.read(), "forge", 1 << 20, limits)]))
"""


@pytest.mark.parametrize("mode", ["off", "auto"])
async def test_the_mapped_function_cannot_forge_its_nodes_sandbox_gaps(web: tuple[str, Path], mode: str) -> None:
    """The function writes its own answer line, with gaps of its choosing, on every descriptor it has (and on
    the task's report pipe through /proc, where it can), then exits: its value is its own, but the gaps
    are those its process reported before any of its code ran. The tasks run in a process of their own
    (a task adopts the orphans of its children, and kills them)."""
    base, served = web
    (served / "logs" / "one.log").write_text("x\n")
    parent = str(Path(maps.__file__).resolve().parents[2])
    with anyio.fail_after(120):
        ran = await anyio.run_process(
            [sys.executable, "-c", TASKS, base + "logs/one.log", mode], input=FORGE.encode(), check=False,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([parent, os.environ.get("PYTHONPATH", "")])},
        )  # fmt: skip
    assert ran.returncode == 0, ran.stderr.decode()[-2000:]
    honest, forged = json.loads(ran.stdout)
    if mode == "off":
        assert honest["gaps"] == ["all layers (RLM_MCP_SANDBOX=off)"], honest
    assert forged == {"value": "FORGED", "gaps": honest["gaps"]}, forged
