"""No process holding a secret is readable by the REPL worker, in any sandbox mode (issue 26 §7).

A CLI sub-call backend runs the user's `claude` or `codex` with the server's environment, logins included,
and keeps a spare process waiting for the next call. The server makes itself non-dumpable; its CLI
children are ordinary processes of the user. Where the worker can read other processes of its user (no
Landlock, no user or PID namespace of its own; RLM_MCP_SANDBOX=off stands in for such a machine here), a
spare would hand model code the login: so no spare is kept, and the sandbox report says why. Where the
sandbox closes other processes, spares are kept and nothing of theirs is readable.

The stand-in CLI gives up its capabilities when it starts: run as root, a process with capabilities the
worker lacks is unreadable anyway, and the test is about the ordinary case, a CLI holding no more than
the worker (as for every non-root user; this file also runs as one, tests/unprivileged.py).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.host.proctree import descendants
from rlm_mcp.llm import logins
from rlm_mcp.surface.server import build_server
from tests.conftest import make_settings, run, text_of, value_of

pytestmark = pytest.mark.anyio

SECRET = "sk-ant-oat-spare-test-5e4d3c2b1a"
STAND_IN = """#!{python}
import ctypes, json, platform, sys
if sys.argv[1:2] == ["auth"]:
    print(json.dumps({{"loggedIn": True, "authMethod": "oauth_token"}}))
    sys.exit(0)
number = {{"x86_64": 126, "aarch64": 91}}.get(platform.machine())
if number is not None:  # no capabilities: as a non-root user's CLI has none (capset to all zero)
    header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
    ctypes.CDLL(None).syscall(number, ctypes.byref(header), ctypes.byref(data))
prompt = sys.stdin.read()
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "result": "got " + prompt,
                  "usage": {{"input_tokens": 1, "output_tokens": 1}}, "modelUsage": {{"m": {{}}}}}}))
"""
# Every process's environ and memory map the worker can open, the stand-ins' by pid (under Landlock /proc
# cannot be listed); what holds the secret.
SCAN = """
import os, json
secret = {secret!r}.encode()
try:
    pids = {{name for name in os.listdir('/proc') if name.isdigit()}}
except OSError:
    pids = set()
pids |= {{str(pid) for pid in {known!r}}}
found = []
for pid in sorted(pids):
    try:
        with open(f'/proc/{{pid}}/environ', 'rb') as handle:
            if secret in handle.read():
                found.append(pid)
    except OSError:
        pass
print(json.dumps(found))
"""


@pytest.fixture(autouse=True)
def fresh_state() -> Iterator[None]:
    logins.forget()
    yield
    logins.forget()


def stand_in_claude(tmp_path: Path) -> Path:
    """A `claude` that says it is logged in and answers from stdin."""
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text(STAND_IN.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def running_stand_ins(fake: Path) -> list[int]:
    """The stand-in CLI processes this test has running (a spare waiting for its prompt, say)."""
    found = []
    for pid in descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/stat") as handle:
                zombie = handle.read().rsplit(") ", 1)[-1][:1] == "Z"
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().split(b"\0")
        except OSError:
            continue
        if not zombie and str(fake).encode() in command:
            found.append(pid)
    return found


async def environment_layer(client: Client) -> dict[str, Any]:
    report = json.loads((await client.read_resource("rlm://sandbox")).contents[0].text)  # type: ignore[union-attr]
    return next(layer for layer in report["layers"] if layer["name"] == "environment")


async def sub_call_then_scan(client: Client, fake: Path) -> tuple[list[int], list[str]]:
    """One sub-call through the stand-in, then a cell that looks for the login: (CLI processes still
    running, where the worker found the secret)."""
    assert await value_of(client, "llm_query('hi')") == "'got hi'"
    waiting = running_stand_ins(fake)
    result = await run(client, SCAN.format(secret=SECRET, known=waiting))
    data = result.structured_content
    assert data is not None and data["outcome"] == "ok", text_of(result)
    return waiting, json.loads(data["stdout"])


async def test_where_the_worker_can_read_other_processes_no_spare_holds_a_login(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", SECRET)
    fake = stand_in_claude(tmp_path)
    settings = make_settings(tmp_path, data_dir, sandbox="off", backend="claude-code", claude_command=str(fake))
    async with Client(build_server(settings)) as client:
        waiting, found = await sub_call_then_scan(client, fake)
        assert found == [], f"the worker read the CLI's login from /proc/{found}/environ"
        assert waiting == []  # no spare waits for a next call
        environment = await environment_layer(client)
    assert not environment["active"] and "other processes of this user" in environment["detail"], environment
    assert spares_line_says_no()


async def test_where_the_sandbox_closes_other_processes_spares_are_kept_and_unreadable(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", SECRET)
    fake = stand_in_claude(tmp_path)
    settings = make_settings(tmp_path, data_dir, backend="claude-code", claude_command=str(fake))
    async with Client(build_server(settings)) as client:
        environment = await environment_layer(client)
        if not environment["active"]:
            pytest.skip(f"this machine's sandbox does not close other processes: {environment['detail']}")
        assert "other processes' by" in environment["detail"], environment  # and says what closes them
        waiting, found = await sub_call_then_scan(client, fake)
        assert found == [], f"the worker read the CLI's login from /proc/{found}/environ"
        assert len(waiting) == 1  # the spare, waiting for the next call: its login out of the worker's reach


def spares_line_says_no() -> bool:
    from rlm_mcp.commands.doctor import spares_line
    from rlm_mcp.sandbox import exposure

    return not exposure.other_processes_closed() and "(spares): NO" in spares_line()
