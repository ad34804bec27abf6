"""Attacks through the session directory, as a hijacked model with run_code would make them.

The worker may write its scratch directory and nothing else. Everything the server opens by name (record,
trace, log, captured output, the signing key) is elsewhere and opened without following links, so what the
worker plants there is never used; what the server shows from records and traces carries no secret.
Each test here failed on the layout before issue 12 (a shared, worker-writable session directory).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from rlm_mcp.errors import SettingsError, SigningKeyError
from rlm_mcp.host.proctree import descendants
from rlm_mcp.session.store import SessionStore
from rlm_mcp.surface.server import build_server
from rlm_mcp.trace import Tracer
from testkit.fakes import FakeProvider
from tests.conftest import load, make_settings, run, text_of, value_of
from tests.test_http import INIT, TOKEN, call, connect, post, start_server
from tests.test_sandbox import needs
from tests.test_stdio import console_script

pytestmark = pytest.mark.anyio

API_KEY = "sk-ant-test-SECRET-0f1e2d3c4b5a"
CALL_LIMIT_S = 60  # a bounded wait: a call that blocks (a FIFO opened by the server) fails the test
# Every name the server uses, and the ones it used before: planted in every directory the worker may write.
SERVER_NAMES = (
    "session.json", "session.tmp", "trace.jsonl", "worker.log", "stdout.capture", "stderr.capture",
    "stdout.txt", "stderr.txt", "secret.key", "last-stdio-session", "snapshot", "work", "home", "tmp", "worker",
)  # fmt: skip
PLANT = """
import os, stat
targets = {targets!r}
planted = 0
for directory in [os.getcwd(), os.environ["HOME"], os.environ["TMPDIR"], "../snapshot", ".."]:
    os.makedirs(directory, exist_ok=True)
    for index, name in enumerate({names!r}):
        path = os.path.join(directory, name)
        if os.path.lexists(path) and not os.path.isdir(path):
            os.remove(path)
        if os.path.isdir(path) and not os.path.islink(path):
            continue  # the worker's own directories stay; the files beside them are the bait
        if {fifo!r}:
            os.mkfifo(path)
        else:
            os.symlink(targets[index % len(targets)], path)
        planted += 1
planted
"""


@pytest.fixture
async def provider(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeProvider]:
    async with FakeProvider.running(answer=lambda prompt, system, model: "an answer") as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        yield fake


def victim_file(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"  # outside the roots and the workspace
    victim.write_text("untouched\n")
    return victim


def everything_shown(result: Any) -> str:
    structured = json.dumps(getattr(result, "structured_content", None) or {})
    return text_of(result) + structured


async def drive_every_tool_and_resource(client: Client, workspace: Path) -> str:
    """Every tool, resource and command that reads the session's files; returns all they showed."""
    shown = []
    with anyio.fail_after(CALL_LIMIT_S):
        shown.append(everything_shown(await run(client, "print('still here'); 6 * 7")))
        shown.append(everything_shown(await load(client, path="notes.txt", name="notes")))
        shown.append(everything_shown(await client.call_tool("sub_query", {"prompt": "sum up", "context": "notes"})))
        for uri in ("rlm://session/trace", "rlm://session/usage", "rlm://session/info", "rlm://sandbox"):
            contents = (await client.read_resource(uri)).contents
            shown.append("".join(getattr(part, "text", "") for part in contents))
    (trace,) = workspace.glob("sessions/*/trace.jsonl")
    assert stat.S_ISREG(os.lstat(trace).st_mode)
    page = trace.with_suffix(".html")
    rendered = subprocess.run(
        [console_script(), "trace", str(trace), "-o", str(page)], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    shown.append(page.read_text())
    listed = subprocess.run(
        [console_script(), "sessions", "--workspace", str(workspace)], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    shown.append(listed.stdout)
    return "\n".join(shown)


@pytest.mark.parametrize("fifo", [False, True], ids=["symlinks", "fifos"])
async def test_links_and_fifos_planted_under_every_name_are_never_followed(
    tmp_path: Path, data_dir: Path, provider: FakeProvider, fifo: bool
) -> None:
    victim = victim_file(tmp_path)
    (data_dir / "notes.txt").write_text("the notes\n")
    workspace = tmp_path / "workspace"
    settings = make_settings(tmp_path, data_dir, workspace=workspace)
    key_path = workspace / "secret.key"
    async with Client(build_server(settings)) as client:
        targets = [str(victim), str(key_path), "/proc/self/environ", "/proc/1/environ", f"/proc/{os.getpid()}/mem"]
        planted = await value_of(client, PLANT.format(targets=targets, names=SERVER_NAMES, fifo=fifo))
        assert int(planted) >= len(SERVER_NAMES) * 4
        crashed = await run(client, "import os; os._exit(1)")  # the next worker starts among the bait
        assert crashed.structured_content["outcome"] == "crashed", text_of(crashed)  # type: ignore[index]
        shown = everything_shown(crashed) + await drive_every_tool_and_resource(client, workspace)
    assert victim.read_text() == "untouched\n"
    key = key_path.read_text().strip()
    assert len(key) == 64
    assert API_KEY not in shown and key not in shown
    assert "still here" in shown and "an answer" in shown


async def test_the_worker_can_write_nothing_the_server_opens(tmp_path: Path, data_dir: Path) -> None:
    needs("filesystem")
    workspace = tmp_path / "workspace"
    async with Client(build_server(make_settings(tmp_path, data_dir, workspace=workspace))) as client:
        await run(client, "x = 1")
        (session_dir,) = workspace.glob("sessions/*")
        for name in ("stdout.capture", "stderr.capture", "worker.log", "trace.jsonl", "session.json"):
            path = str(session_dir / name)
            for attack in (f"os.symlink('/tmp', {path!r})", f"os.mkfifo({path!r})", f"open({path!r}, 'a')"):
                error = text_of(await run(client, f"import os\n{attack}"))
                assert "PermissionError" in error or "FileExistsError" in error, (attack, error)
            error = text_of(await run(client, f"open({path!r}, 'rb').read(10)"))
            assert "PermissionError" in error or "FileNotFoundError" in error, error  # hidden under bubblewrap
        escape = text_of(await run(client, f"open({str(workspace / 'secret.key')!r}).read()"))
        assert "PermissionError" in escape or "FileNotFoundError" in escape
    assert all(stat.S_ISREG(os.lstat(session_dir / name).st_mode) for name in ("trace.jsonl", "session.json"))


def test_the_trace_never_writes_through_a_link_or_blocks_on_a_fifo(tmp_path: Path) -> None:
    victim = victim_file(tmp_path)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "trace.jsonl").symlink_to(victim)
    with Tracer(linked / "trace.jsonl").event("tool", "run_code"):
        pass
    assert victim.read_text() == "untouched\n"
    piped = tmp_path / "piped"
    piped.mkdir()
    os.mkfifo(piped / "trace.jsonl")
    done: list[bool] = []

    def write() -> None:  # in a thread: if the open blocked, the test must not hang with it
        with Tracer(piped / "trace.jsonl").event("tool", "run_code"):
            pass
        done.append(True)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    writer.join(timeout=20)
    assert done == [True], "writing the trace blocked on a FIFO"


@pytest.mark.parametrize("content", [b"", b"00" * 16, b"not hex at all", b"ab" * 31 + b"z"])
def test_a_short_or_malformed_signing_key_is_an_error_never_replaced(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "ws").mkdir()
    key = tmp_path / "ws" / "secret.key"
    key.write_bytes(content)
    with pytest.raises(SigningKeyError, match="32 bytes"):
        SessionStore(tmp_path / "ws")
    assert key.read_bytes() == content
    done = subprocess.run(
        [console_script(), "sessions", "--workspace", str(tmp_path / "ws")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "secret.key" in done.stderr and "32 bytes" in done.stderr
    assert issubclass(SigningKeyError, SettingsError)


def test_a_missing_signing_key_is_made_of_32_random_bytes(tmp_path: Path) -> None:
    SessionStore(tmp_path)
    key = tmp_path / "secret.key"
    assert len(bytes.fromhex(key.read_text())) == 32 and stat.S_IMODE(key.stat().st_mode) == 0o600
    other = tmp_path / "other"
    other.mkdir()
    (other / "secret.key").symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(SigningKeyError):
        SessionStore(other)
    assert not (tmp_path / "elsewhere.key").exists()


async def test_resume_replays_only_context_loads_checked_against_todays_roots(tmp_path: Path, data_dir: Path) -> None:
    victim = victim_file(tmp_path)
    (data_dir / "kept.txt").write_text("still under a root\n")
    yesterday = tmp_path / "yesterday"
    yesterday.mkdir()
    (yesterday / "gone.txt").write_text("no longer under a root\n")
    workspace = tmp_path / "workspace"
    store = SessionStore(workspace)  # the server's own key: the record is authentic, its content still data
    exec_request = {"op": "exec", "code": f"open({str(victim)!r}, 'w').write('pwned')"}
    contexts = [
        {"name": "kept", "path": "kept.txt", "text": None, "exclude": [], "source": "x"},
        {"name": "gone", "path": str(yesterday / "gone.txt"), "text": None, "exclude": [], "source": "y"},
        {"name": "old", "request": exec_request, "source": "z"},
        {"name": "__import__", "path": "kept.txt", "text": None, "exclude": [], "source": "w"},
    ]
    store.save("resumed0001", {"contexts": contexts, "snapshot": {"bad name!": "0" * 64}, "cells": "many"})
    settings = make_settings(tmp_path, data_dir, workspace=workspace)
    async with Client(build_server(settings)) as client:
        result = await run(client, "sorted(contexts())", session="resumed0001")
        text = text_of(result)
        assert result.structured_content["result"] == "['kept']", text  # type: ignore[index]
        assert "gone" in text and "outside the allowed roots" in text
    assert victim.read_text() == "untouched\n"


# -- over HTTP ------------------------------------------------------------------------------------------


async def test_refused_calls_leave_no_session_behind(tmp_path: Path, data_dir: Path) -> None:
    process, url = start_server(tmp_path, data_dir, "--auth-token", TOKEN, "--max-sessions", "3")
    try:
        async with connect(url) as client:
            for _ in range(10):  # each would have taken a slot for half an hour
                refused = await client.call_tool("load_context", {"text": "x", "name": "not a name"})
                assert refused.is_error
            sessions_dir = tmp_path / "ws" / "sessions"
            assert not list(sessions_dir.iterdir())
            for _ in range(3):
                await call(client, "run_code", {"code": "1"})
    finally:
        process.terminate()
        process.wait(10)


async def test_one_client_address_may_start_only_so_many_sessions_a_minute(tmp_path: Path, data_dir: Path) -> None:
    process, url = start_server(tmp_path, data_dir, "--auth-token", TOKEN, "--max-new-sessions-per-minute", "3")
    try:
        async with connect(url) as client:
            handles = [(await call(client, "run_code", {"code": "1"}))["session"] for _ in range(3)]
            refused = await client.call_tool("run_code", {"code": "1"})
            assert refused.is_error and "started 3 sessions in the last minute" in text_of(refused)
            assert (await call(client, "run_code", {"code": "2", "session": handles[0]}))["result"] == "2"
    finally:
        process.terminate()
        process.wait(10)


FIND_HANDLE = """
import os
found = []
try:
    pids = os.listdir('/proc')
except OSError:  # Landlock: only /proc/self; try the server's processes by number then
    pids = {pids!r}
for pid in pids:
    if pid.isdigit():
        for part in ('cmdline', 'environ', 'cwd', 'root'):
            try:
                where = os.path.join('/proc', pid, part)
                seen = os.readlink(where) if part in ('cwd', 'root') else open(where, 'rb').read().decode('latin-1')
            except OSError:
                continue
            if {handle!r} in seen:
                found.append(pid + '/' + part)
for top in {places!r}:
    for path, dirs, files in os.walk(top, onerror=lambda error: None):
        if any({handle!r} in name for name in dirs + files):
            found.append(path)
found
"""


async def test_a_session_cannot_find_another_sessions_handle(tmp_path: Path, data_dir: Path) -> None:
    process, url = start_server(tmp_path, data_dir, "--auth-token", TOKEN)
    try:
        async with connect(url) as client:
            other = (await call(client, "run_code", {"code": "secret_of_b = 1"}))["session"]
            mine = (await call(client, "run_code", {"code": "0"}))["session"]
            places = [str(tmp_path / "ws"), str(tmp_path / "ws" / "sessions")]
            pids = [str(pid) for pid in [process.pid, *descendants(process.pid)]]
            code = FIND_HANDLE.format(handle=other, places=places, pids=pids)
            assert (await call(client, "run_code", {"code": code, "session": mine}))["result"] == "[]"
            # what any local process could read, whatever the sandbox: no command line names a session
            for pid in descendants(process.pid):
                with contextlib.suppress(OSError):
                    assert other.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        process.terminate()
        process.wait(10)


async def test_loopback_http_needs_a_token_unless_no_auth_is_said(tmp_path: Path, data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RLM_MCP_AUTH_TOKEN"}
    process, url = start_server(tmp_path, data_dir, env=env)
    try:
        assert post(url, json.dumps(INIT)).status_code == 401
        with anyio.fail_after(20):
            printed = ""
            while "Bearer " not in printed:
                printed += await anyio.to_thread.run_sync(process.stderr.readline)  # type: ignore[union-attr]
        token = printed.split("Bearer ", 1)[1].split()[0]
        assert post(url, json.dumps(INIT), authorization=f"Bearer {token}").status_code == 200
    finally:
        process.terminate()
        process.wait(10)
    process, url = start_server(tmp_path, data_dir, "--no-auth", env=env)
    try:
        assert post(url, json.dumps(INIT)).status_code == 200
    finally:
        process.terminate()
        process.wait(10)


# -- resources beyond one file ------------------------------------------------------------------------


async def test_a_cell_that_fills_the_scratch_directory_past_its_cap_is_stopped(tmp_path: Path, data_dir: Path) -> None:
    settings = make_settings(tmp_path, data_dir, disk_limit_mb=16, write_limit_mb=8)
    async with Client(build_server(settings)) as client:
        fill = (
            "import os, time\n"
            "for i in range(3):\n"  # each file within the per-file limit, together over the session's cap
            "    with open(f'fill{i}', 'wb') as handle:\n"
            "        os.posix_fallocate(handle.fileno(), 0, 8 << 20)\n"
            "time.sleep(60)"
        )
        result = await run(client, fill, timeout_s=120)
        data = result.structured_content
        assert data is not None and data["outcome"] != "ok", text_of(result)
        assert "over this session's cap of 16 MiB" in text_of(result)
        cleaned = await run(client, "import os\nfor i in range(3): os.remove(f'fill{i}')\nsorted(os.listdir())")
        assert cleaned.structured_content["result"] == "[]", text_of(cleaned)  # type: ignore[index]
        assert "cap" not in text_of(cleaned)


async def test_threads_left_running_by_a_cell_are_named(client: Client) -> None:
    started = await run(
        client,
        "import threading\nstop = threading.Event()\n"
        "threading.Thread(target=stop.wait, name='spinner', daemon=True).start()",
    )
    assert "threads still running after this cell: spinner" in text_of(started)
    stopped = await run(client, "stop.set(); import time; time.sleep(0.2)")
    assert "threads still running" not in text_of(stopped)


async def test_a_refused_path_does_not_say_where_it_leads(client: Client, tmp_path: Path, data_dir: Path) -> None:
    hidden = tmp_path / "hidden-target-name"
    hidden.mkdir()
    (hidden / "file.txt").write_text("outside\n")
    (data_dir / "innocent").symlink_to(hidden)
    result = await load(client, path="innocent/file.txt")
    assert result.is_error and "outside the allowed roots" in text_of(result)
    assert "hidden-target-name" not in text_of(result)
