"""Guards that a red team's planted one-line bugs slipped past (issue 26, "Tests the suite lacks").

Each test here is the one that fails when its one line of defence is taken out: a root compared as a string
prefix, a key passed to the worker, stderr left uncapped, an empty signature accepted, the viewer's `<` escape
dropped. They run as root and again as an unprivileged user (tests/unprivileged.py: SECURITY_TESTS).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mcp import Client

from rlm_mcp.session.store import RECORD, SessionStore
from rlm_mcp.surface.server import build_server
from rlm_mcp.viewer.page import render
from tests.conftest import load, make_settings, run, text_of

pytestmark = pytest.mark.anyio

# What the server's environment may hold: keys, login tokens, cloud credentials, the HTTP token.
SECRETS = {
    "ANTHROPIC_API_KEY": "sk-ant-gap-test-4b1d2c3e",
    "OPENAI_API_KEY": "sk-openai-gap-test-8a7f6e",
    "RLM_MCP_OPENAI_API_KEY": "sk-rlm-openai-gap-test-5d4c",
    "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat-gap-test-9e8d",
    "AWS_SECRET_ACCESS_KEY": "aws-gap-test-secret-2c1b",
    "RLM_MCP_AUTH_TOKEN": "bearer-gap-test-7f6e5d",
    "GITHUB_TOKEN": "ghp_gap_test_3a2b1c",
}
# The worker's variables: the allow-list (rlm_mcp/sandbox/policy.py), what the worker sets for itself, and
# what the interpreter or bubblewrap add.
WORKER_VARIABLES = {
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "PYTHONPATH", "HOME", "TMPDIR",
    "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE", "PWD", "SHLVL", "_",
}  # fmt: skip
# A cell that looks for the secrets everywhere the worker can read them: its own environment, every process's
# environ and command line, and the files of its home, scratch and working directories.
SEARCH = """
import os
secrets = {secrets!r}
found = set()
def look(blob, where):
    for value in secrets:
        if value.encode() in blob:
            found.add(where)
look("\\0".join(f"{{k}}={{v}}" for k, v in os.environ.items()).encode(), "os.environ")
try:
    pids = [name for name in os.listdir("/proc") if name.isdigit()]
except OSError:  # /proc unlistable (Landlock): probe every pid a process of this machine is likely to have
    pids = [str(pid) for pid in range(1, 1 << 16)]
for pid in pids:
    for part in ("environ", "cmdline"):
        try:
            with open(f"/proc/{{pid}}/{{part}}", "rb") as handle:
                look(handle.read(), f"/proc/{{pid}}/{{part}}")
        except OSError:
            pass
for top in {{os.environ["HOME"], os.environ["TMPDIR"], os.getcwd()}}:
    for directory, _, names in os.walk(top):
        for name in names:
            try:
                with open(os.path.join(directory, name), "rb") as handle:
                    look(handle.read(1 << 20), os.path.join(directory, name))
            except OSError:
                pass
import json
print(json.dumps([sorted(os.environ), sorted(found)]))
"""


async def test_a_sibling_directory_sharing_the_roots_prefix_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    sibling = tmp_path / "data-private"
    root.mkdir()
    sibling.mkdir()
    (root / "public.txt").write_text("public")
    (sibling / "secret.txt").write_text("the sibling's secret")
    async with Client(build_server(make_settings(tmp_path, root))) as client:
        for path in (str(sibling / "secret.txt"), str(sibling), str(root) + "-private/secret.txt", "../data-private"):
            result = await load(client, path=path, name="stolen")
            assert result.is_error and "outside" in text_of(result), (path, text_of(result))
        assert not (await load(client, path=str(root / "public.txt"))).is_error
        check = await run(client, "'stolen' in globals()")
        assert check.structured_content is not None and check.structured_content["result"] == "False"


async def test_no_secret_of_the_servers_environment_reaches_the_worker(
    tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
        result = await run(client, SEARCH.format(secrets=list(SECRETS.values())))
        data = result.structured_content
        assert data is not None and data["outcome"] == "ok", text_of(result)
        names, found = json.loads(data["stdout"])
        assert set(names) <= WORKER_VARIABLES, set(names) - WORKER_VARIABLES
        assert found == [], f"a secret's value is readable by the worker at {found}"


async def test_stderr_is_capped_like_stdout(tmp_path: Path, data_dir: Path) -> None:
    async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
        result = await run(client, "import sys\nsys.stderr.write('e' * 100_000)", max_output_chars=500)
        data = result.structured_content
        assert data is not None and data["stderr_chars"] == 100_000
        assert len(data["stderr"]) < 700, len(data["stderr"])
        assert len(text_of(result)) < 2_000
        assert (await run(client, "len(_err)")).structured_content["result"] == "100000"  # type: ignore[index]


@pytest.mark.parametrize("signature", ["", None, "missing"])
def test_a_changed_record_without_a_signature_is_refused(tmp_path: Path, signature: str | None) -> None:
    store = SessionStore(tmp_path / "workspace")
    session_id = "s" + "0" * 31
    store.save(session_id, {"contexts": [], "snapshot": {}})
    assert store.load(session_id) is not None and len(store.list()) == 1
    path = store.directory(session_id) / RECORD
    stored = json.loads(path.read_text())
    stored["record"]["contexts"] = [{"name": "planted", "source": "/etc/shadow"}]
    if signature == "missing":
        del stored["hmac"]
    else:
        stored["hmac"] = signature
    path.write_text(json.dumps(stored))
    assert store.load(session_id) is None
    assert store.list() == []


def test_a_hostile_event_name_leaves_no_literal_angle_bracket_in_the_data_block() -> None:
    hostile = "</script ><script>alert(1)</script><!--<script>"
    events = [{"id": 1, "type": "tool", "name": hostile, "code": hostile, "stdout": hostile}]
    page = render(events, title="t")  # type: ignore[arg-type]
    start = page.index('id="trace-data">') + len('id="trace-data">')
    block = page[start : page.index("</script>", start)]
    assert "<" not in block and ">" not in block and "&" not in block
    assert json.loads(block)["events"][0]["name"] == hostile
