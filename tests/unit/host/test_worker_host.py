"""The worker's host against small stand-in workers that misbehave: every request ends in one of its four
fates, and the host always gets control back."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from rlm_mcp.errors import WorkerStartError
from rlm_mcp.host.worker_host import WorkerHost
from rlm_mcp.sandbox.policy import SandboxPolicy

pytestmark = pytest.mark.anyio

# The stand-ins speak the real protocol: the start frame in, a ready frame out, then requests.
PRELUDE = """\
import os, signal, sys, time
sys.path.insert(0, sys.argv[2])
from rlm_mcp.bridge import frames
inp = os.fdopen(0, "rb")
start = frames.read_frame(inp)
frames.write_frame(1, {"op": "ready", "pid": os.getpid(), "sandbox": []})
"""


def host(tmp_path: Path, body: str, **options: float) -> WorkerHost:
    policy = SandboxPolicy(
        mode="off", read_only=(), read_write=(), memory_bytes=1 << 30, write_bytes=1 << 30, cell_cpu_s=60
    )
    return WorkerHost(
        private_dir=tmp_path / "session",
        scratch_dir=tmp_path / "session" / "scratch",
        env={"PATH": os.environ.get("PATH", "")},
        policy=policy,
        program=PRELUDE + textwrap.dedent(body),
        **options,
    )


async def test_a_worker_that_answers_is_ok(tmp_path: Path) -> None:
    worker = host(
        tmp_path,
        "while (r := frames.read_frame(inp)) is not None:\n    frames.write_frame(1, {'id': r['id'], 'ok': True})\n",
    )
    try:
        outcome = await worker.call({"op": "x"}, timeout=5, grace=1)
        assert outcome.fate == "ok" and outcome.reply == {"id": 1, "ok": True}
    finally:
        await worker.close()


async def test_a_worker_that_never_says_ready_fails_to_start_with_what_it_printed(tmp_path: Path) -> None:
    worker = host(tmp_path, "", start_timeout_s=1.0)
    worker.program = (
        "import sys; sys.stderr.write('cannot start: no luck'); sys.stderr.flush(); import time; time.sleep(60)"
    )
    with pytest.raises(WorkerStartError, match=r"no ready message within 1 s\): cannot start: no luck"):
        await worker.start()
    assert not worker.alive


async def test_a_reply_for_another_request_is_a_protocol_violation(tmp_path: Path) -> None:
    worker = host(
        tmp_path, "r = frames.read_frame(inp)\nframes.write_frame(1, {'id': 999, 'ok': True})\ntime.sleep(60)\n"
    )
    try:
        outcome = await worker.call({"op": "x"}, timeout=5, grace=1)
        assert outcome.fate == "crashed" and "protocol violation" in outcome.cause
        assert not worker.alive
    finally:
        await worker.close()


async def test_garbage_on_the_pipe_is_a_protocol_violation(tmp_path: Path) -> None:
    worker = host(tmp_path, "frames.read_frame(inp)\nos.write(1, b'\\xff' * 64)\ntime.sleep(60)\n")
    try:
        outcome = await worker.call({"op": "x"}, timeout=5, grace=1)
        assert outcome.fate == "crashed" and "protocol violation" in outcome.cause
    finally:
        await worker.close()


async def test_a_worker_that_stops_on_the_interrupt_is_interrupted(tmp_path: Path) -> None:
    body = """\
    r = frames.read_frame(inp)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        frames.write_frame(1, {'id': r['id'], 'ok': True, 'stopped': True})
    time.sleep(60)
    """
    worker = host(tmp_path, body)
    try:
        outcome = await worker.call({"op": "x"}, timeout=0.5, grace=2)
        assert outcome.fate == "interrupted" and outcome.reply == {"id": 1, "ok": True, "stopped": True}
        assert "timed out after 0.5 s" in outcome.cause
    finally:
        await worker.close()


async def test_a_worker_that_ignores_the_interrupt_is_killed_with_its_children(tmp_path: Path) -> None:
    body = """\
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    child = os.fork()
    if child == 0:
        time.sleep(120)
        os._exit(0)
    with open(os.environ['CHILD_PID'], 'w') as f:
        f.write(str(child))
    frames.read_frame(inp)
    time.sleep(60)
    """
    worker = host(tmp_path, body)
    worker.env["CHILD_PID"] = str(tmp_path / "child.pid")
    outcome = await worker.call({"op": "x"}, timeout=0.3, grace=0.3)
    assert outcome.fate == "killed" and "did not stop within 0.3 s of an interrupt" in outcome.cause
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)  # the kill took the worker's whole process group
    await worker.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return not stat.read().split(") ")[-1].startswith("Z")
    except OSError:
        return False


async def test_a_worker_that_dies_mid_request_has_crashed_with_its_cause(tmp_path: Path) -> None:
    worker = host(
        tmp_path,
        "frames.read_frame(inp)\nos.kill(os.getpid(), signal.SIGSEGV)\n",
    )
    try:
        outcome = await worker.call({"op": "x"}, timeout=5, grace=1)
        assert outcome.fate == "crashed" and "SIGSEGV" in outcome.cause
    finally:
        await worker.close()
