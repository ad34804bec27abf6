"""Sessions that survive: a killed server resumed, snapshots refused when tampered, what cannot be saved named."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from rlm_mcp.surface.server import build_server
from tests.conftest import load, make_settings, run, text_of, value_of
from tests.test_stdio import console_script

pytestmark = pytest.mark.anyio


def stdio_params(data_dir: Path, workspace: Path, *extra: str) -> StdioServerParameters:
    args = ["--root", str(data_dir), "--workspace", str(workspace), "--structured-content", *extra]
    return StdioServerParameters(command=console_script(), args=args, env={"PATH": os.environ.get("PATH", "")})


def server_pids(workspace: Path) -> list[int]:
    """rlm-mcp servers (not their workers) started with this workspace."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                launched = any(argument.endswith(b"rlm-mcp") for argument in command[:2])
                if launched and str(workspace).encode() in command:
                    found.append(int(entry))
    return found


def session_record(workspace: Path) -> Path:
    (record,) = (workspace / "sessions").glob("*/session.json")
    return record


async def test_a_killed_server_is_resumed_with_its_contexts_and_variables(tmp_path: Path, data_dir: Path) -> None:
    (data_dir / "book.txt").write_text("chapter one\n" * 100)
    workspace = tmp_path / "ws"
    with contextlib.suppress(Exception):  # the server dies under the client's feet
        async with Client(stdio_params(data_dir, workspace)) as client:
            assert not (await load(client, path="book.txt", name="book")).is_error
            await run(
                client, "counts = {'chapters': book.count('chapter')}\nimport re\ndef shout(s):\n    return s.upper()"
            )
            await run(client, "print('a cell that changes no variable')")
            (pid,) = server_pids(workspace)
            os.kill(pid, signal.SIGKILL)
            await run(client, "1")
    deadline = time.monotonic() + 5
    while server_pids(workspace) and time.monotonic() < deadline:
        time.sleep(0.05)

    async with Client(stdio_params(data_dir, workspace, "--resume")) as client:
        result = await run(client, "counts['chapters'], len(book), shout('ok'), re.escape('.')")
        assert result.structured_content["result"] == "(100, 1200, 'OK', '\\\\.')", text_of(result)  # type: ignore[index]
        notes = " ".join(result.structured_content["notes"])  # type: ignore[index]
        assert "resumed session" in notes and "contexts reloaded: book" in notes
        assert "variables restored from the last successful cell: counts, re, shout" in notes
        assert result.structured_content["cell"] == 3  # type: ignore[index]  # numbered on, not reusing 2

    # Without --resume, a new server starts a new, empty session.
    async with Client(stdio_params(data_dir, workspace)) as client:
        assert "NameError" in text_of(await run(client, "counts"))


async def test_a_tampered_record_is_refused_and_the_session_starts_clean(tmp_path: Path, data_dir: Path) -> None:
    workspace = tmp_path / "ws"
    settings = make_settings(tmp_path, data_dir, workspace=workspace)
    async with Client(build_server(settings)) as client:
        await run(client, "secret = 'kept'")
    record = session_record(workspace)
    stored = json.loads(record.read_text())
    stored["record"]["cells"] = 99  # any change, without the server's key
    record.write_text(json.dumps(stored))

    async with Client(build_server(make_settings(tmp_path, data_dir, workspace=workspace, resume=True))) as client:
        result = await run(client, "secret")
        assert result.structured_content["error_type"] == "NameError", text_of(result)  # type: ignore[index]
        assert "resumed" not in text_of(result)


async def test_a_tampered_snapshot_file_is_not_unpickled(tmp_path: Path, data_dir: Path) -> None:
    workspace = tmp_path / "ws"
    async with Client(build_server(make_settings(tmp_path, data_dir, workspace=workspace))) as client:
        await run(client, "good = 1\nbad = 2")
    (snapshot,) = (workspace / "sessions").glob("*/scratch/snapshot/bad.pickle")
    # A pickle that would run code if loaded.
    snapshot.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")

    async with Client(build_server(make_settings(tmp_path, data_dir, workspace=workspace, resume=True))) as client:
        result = await run(client, "good")
        assert result.structured_content["result"] == "1", text_of(result)  # type: ignore[index]
        assert "bad (its snapshot file was changed on disk; refused)" in text_of(result)
        assert "NameError" in text_of(await run(client, "bad"))
    assert not (tmp_path / "pwned").exists()


async def test_names_that_cannot_be_saved_are_reported(client: Client) -> None:
    result = await run(client, "import threading\ngen = (i for i in range(3))\nlock = threading.Lock()\nfine = 1")
    text = text_of(result)
    assert "not saved for recovery" in text and "gen (generator" in text and "lock (lock" in text
    assert "fine" not in text.split("not saved for recovery")[1]
    crashed = await run(client, "import os; os._exit(1)")
    assert "variables restored from the last successful cell: fine, threading" in text_of(crashed)
    assert "NameError" in text_of(await run(client, "gen"))


async def test_mutations_and_deletions_are_snapshotted(client: Client) -> None:
    await run(client, "items = [1]\ngone = 'soon'")
    await run(client, "items.append(2)\ndel gone")
    await run(client, "import os; os._exit(1)")
    assert await value_of(client, "items") == "[1, 2]"
    assert "NameError" in text_of(await run(client, "gone"))


def test_saved_sessions_are_listed_and_deleted_from_the_command_line(tmp_path: Path, data_dir: Path) -> None:
    import subprocess

    from rlm_mcp.session.store import SessionStore

    workspace = tmp_path / "ws"
    store = SessionStore(workspace)
    store.save("abc12345", {"contexts": [{"name": "book", "request": {}, "source": "x"}], "snapshot": {"n": "0"}})
    base = [console_script(), "sessions", "--workspace", str(workspace), "--root", str(data_dir)]
    listed = subprocess.run(base, capture_output=True, text=True, check=True).stdout
    assert "abc12345" in listed and "book; 1 saved variables" in listed
    from rlm_mcp.memory.service import session_tag

    assert f"memory tag {session_tag('abc12345')}" in listed  # how the handbook and findings name it
    deleted = subprocess.run([*base, "--delete", "abc12345"], capture_output=True, text=True)
    assert deleted.returncode == 0 and not store.directory("abc12345").exists()
    missing = subprocess.run([*base, "--delete", "abc12345"], capture_output=True, text=True)
    assert missing.returncode == 1 and "no saved session 'abc12345'" in missing.stderr


async def test_http_sessions_are_capped_queued_and_evicted_when_idle(tmp_path: Path, data_dir: Path) -> None:
    """In memory, with the HTTP rules: no MCP session id, so sessions go by the handles the server mints."""
    import anyio

    settings = make_settings(tmp_path, data_dir, transport="http", max_sessions=2, idle_timeout_s=0.5)
    async with Client(build_server(settings)) as client:
        first = await run(client, "x = 1")
        handle = first.structured_content["session"]  # type: ignore[index]
        await run(client, "other = 1")  # a second session
        full = await run(client, "1")
        assert full.is_error and "maximum of 2 sessions" in text_of(full)

        # Two calls on one session are queued, never interleaved.
        seen: list[str] = []

        async def slow() -> None:
            await run(client, "import time\nx = 'busy'\ntime.sleep(0.5)\nx = 'done'", session=handle)

        async def reader() -> None:
            await anyio.sleep(0.1)
            seen.append((await run(client, "x", session=handle)).structured_content["result"])  # type: ignore[index]

        async with anyio.create_task_group() as group:
            group.start_soon(slow)
            group.start_soon(reader)
        assert seen == ["'done'"]

        await anyio.sleep(2.5)  # idle past the timeout: both sessions are closed, their records kept
        resumed = await run(client, "x", session=handle)
        assert resumed.structured_content["result"] == "'done'", text_of(resumed)  # type: ignore[index]
        assert "resumed session" in text_of(resumed)
