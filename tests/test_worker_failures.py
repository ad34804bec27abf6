"""Code that hangs, ignores interrupts or kills its own process: the server answers and carries on."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from rlm_mcp.surface.server import build_server
from tests.conftest import load, make_settings, run, text_of, value_of, worker_pid

pytestmark = pytest.mark.anyio

SWALLOW_INTERRUPTS = """
import time
while True:
    try:
        time.sleep(0.05)
    except KeyboardInterrupt:
        pass
"""


@pytest.fixture
async def client(tmp_path: Path, data_dir: Path) -> AsyncIterator[Client]:
    (data_dir / "book.txt").write_text("chapter one\n" * 1_000)
    settings = make_settings(tmp_path, data_dir, interrupt_grace_s=0.5)
    async with Client(build_server(settings)) as connected:
        assert not (await load(connected, path="book.txt")).is_error
        yield connected


def pid_alive(pid: int) -> bool:
    """Running or stopped; a zombie (dead, not yet reaped by whoever adopted it) counts as dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return False
    return stat[stat.rfind(b")") + 2 :].split()[0] != b"Z"


async def test_an_infinite_loop_is_interrupted_and_state_is_kept(client: Client) -> None:
    await run(client, "before = 'kept'")
    result = await run(client, "during = 1\nwhile True:\n    during += 1", timeout_s=0.5)
    data = result.structured_content
    assert result.is_error and data is not None
    assert data["outcome"] == "interrupted" and data["state"] == "kept"
    assert data["error_type"] == "KeyboardInterrupt"
    assert "timed out after 0.5 s" in text_of(result)
    assert await value_of(client, "before") == "'kept'"
    assert int(await value_of(client, "during")) > 1  # the cell's own progress is kept too
    assert await value_of(client, "len(context)") == str(len("chapter one\n") * 1_000)


async def test_code_that_ignores_interrupts_is_killed_and_contexts_come_back(client: Client, tmp_path: Path) -> None:
    await run(client, "pass")
    old_pid = worker_pid(tmp_path)
    await run(client, "doomed = 1")
    result = await run(client, SWALLOW_INTERRUPTS, timeout_s=0.5)
    data = result.structured_content
    assert result.is_error and data is not None
    assert data["outcome"] == "killed" and data["state"] == "restored"
    assert "did not stop within 0.5 s of an interrupt" in data["error"]
    notes = " ".join(data["notes"])
    assert "variables restored from the last successful cell: doomed" in notes
    assert "contexts reloaded: context" in notes
    assert not pid_alive(old_pid)
    # the next call is served at once by a fresh worker that has the context but not the variables
    assert await value_of(client, "'served'") == "'served'"
    assert worker_pid(tmp_path) != old_pid
    assert await value_of(client, "context[:11]") == "'chapter one'"
    assert await value_of(client, "doomed") == "1"  # saved after its cell, restored into the fresh worker


ESCAPE_THE_PROCESS_GROUP = """
import os, subprocess, time
child = subprocess.Popen(['sleep', '300']).pid
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()  # a new session: out of the worker's process group
    if os.fork() == 0:  # and a grandchild, orphaned at once
        os.write(w, str(os.getpid()).encode())
        time.sleep(300)
    os._exit(0)
os.wait()
escaped = int(os.read(r, 20))
(child, escaped)
"""


@pytest.mark.parametrize("ending", ["killed on timeout", "session closed"])
async def test_children_of_the_worker_die_with_it(tmp_path: Path, data_dir: Path, ending: str) -> None:
    """With the sandbox off (it forbids processes), even children that left the process group are killed."""
    settings = make_settings(tmp_path, data_dir, interrupt_grace_s=0.3, sandbox="off")
    async with Client(build_server(settings)) as client:
        pids = [int(pid) for pid in (await value_of(client, ESCAPE_THE_PROCESS_GROUP)).strip("()").split(",")]
        assert all(pid_alive(pid) for pid in pids)
        if ending == "killed on timeout":
            result = await run(client, SWALLOW_INTERRUPTS, timeout_s=0.3)
            assert result.structured_content is not None and result.structured_content["outcome"] == "killed"
    deadline = time.monotonic() + 5
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(pid) for pid in pids)


@pytest.mark.parametrize(
    ("code", "cause"),
    [
        ("import os\nos._exit(3)", "the worker exited with code 3"),
        ("import ctypes\nctypes.string_at(0)", "SIGSEGV (segmentation fault)"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "SIGKILL (killed: out of memory"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGTERM)", "SIGTERM"),
    ],
)
async def test_a_crashing_worker_is_reported_and_replaced(client: Client, code: str, cause: str) -> None:
    await run(client, "saved = [1, 2]")
    result = await run(client, "saved.append(3)\nunsaved = 'from the crashing cell'\n" + code)
    data = result.structured_content
    assert result.is_error and data is not None
    assert data["outcome"] == "crashed" and data["state"] == "restored"
    assert cause in data["error"]
    assert "contexts reloaded: context" in text_of(result)
    assert await value_of(client, "context.count('chapter')") == "1000"
    # Variables come back as they were after the last successful cell: the crashing cell's changes are gone.
    assert await value_of(client, "saved") == "[1, 2]"
    assert (await run(client, "unsaved")).structured_content["error_type"] == "NameError"  # type: ignore[index]


async def test_a_segfault_shows_where_it_happened(client: Client) -> None:
    result = await run(client, "import ctypes\n\nctypes.string_at(0)")
    assert result.structured_content is not None
    stderr = result.structured_content["stderr"]
    assert "Segmentation fault" in stderr and 'File "<cell' in stderr


async def test_a_worker_killed_between_calls_is_replaced_on_the_next_call(client: Client, tmp_path: Path) -> None:
    await run(client, "pass")
    pid = worker_pid(tmp_path)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    result = await run(client, "len(context)")
    data = result.structured_content
    assert data is not None and data["outcome"] == "ok" and data["result"] == "12000", text_of(result)
    assert "worker" in " ".join(data["notes"])
