"""Sub-calls through the coding-agent logins users already have: the real Claude Code and Codex CLIs
(npm, pinned, installed by .ci/run), pointed at the fake provider on 127.0.0.1 with fake tokens, and no
API key in the server's environment."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp.commands.doctor import backend_lines
from rlm_mcp.config import Settings
from rlm_mcp.llm import logins
from rlm_mcp.surface.server import build_server
from testkit.clis import CLAUDE_VERSION, CODEX_VERSION, find_claude, find_npm_cli
from testkit.fakes import FakeProvider
from tests.conftest import make_settings, run, text_of, value_of

pytestmark = pytest.mark.anyio

CLAUDE = find_claude()
CODEX = find_npm_cli("codex", "RLM_MCP_TEST_CODEX")
needs_claude = pytest.mark.skipif(
    CLAUDE is None, reason=f"the Claude Code CLI (npm @anthropic-ai/claude-code@{CLAUDE_VERSION}) is not installed"
)
needs_codex = pytest.mark.skipif(
    CODEX is None, reason=f"the Codex CLI (npm @openai/codex@{CODEX_VERSION}) is not installed"
)
OAUTH = "fake-claude-oauth-token-0123456789"
CODEX_KEY = "sk-fake-codex-key-0123456789"


@pytest.fixture(autouse=True)
def fresh_logins() -> Iterator[None]:
    logins.forget()
    yield
    logins.forget()


@pytest.fixture
async def provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[FakeProvider]:
    """The fake, and an environment where no API key is set and the CLIs' logins are ours (a temp HOME)."""
    async with FakeProvider.running(
        answer=lambda prompt, system, model: f"ans:{prompt.rsplit(chr(10), 1)[-1]}"
    ) as fake:
        home = tmp_path / "home"
        home.mkdir()
        for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CODEX_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDECODE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "0")  # the router retries; the CLI should not as well
        yield fake


def claude_logged_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", OAUTH)


def codex_home(monkeypatch: pytest.MonkeyPatch, provider: FakeProvider, home: Path, chatgpt: bool = False) -> None:
    """A Codex configuration (the user's own, as far as rlm-mcp knows) whose provider is the fake, and a
    login: an API key, or a ChatGPT login with unsigned tokens."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        'model_provider = "fake"\n'
        'chatgpt_base_url = "' + provider.base_url + '/backend-api/"\n'
        "[model_providers.fake]\n"
        'name = "fake"\n'
        f'base_url = "{provider.openai_base_url}"\n'
        'wire_api = "responses"\n'
        "requires_openai_auth = true\n"
        "supports_websockets = false\n"
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )
    if chatgpt:

        def part(data: dict[str, Any]) -> str:
            return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

        claims = {
            "email": "user@example.com",
            "exp": 4_000_000_000,
            "https://api.openai.com/auth": {
                "chatgpt_plan_type": "pro",
                "chatgpt_user_id": "user-fake",
                "chatgpt_account_id": "acct-fake",
            },
        }
        token = f"{part({'alg': 'none'})}.{part(claims)}.sig"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        tokens = {"id_token": token, "access_token": token, "refresh_token": "x", "account_id": "acct-fake"}
        auth = {"auth_mode": "chatgpt", "OPENAI_API_KEY": None, "tokens": tokens, "last_refresh": now}
    else:
        auth = {"auth_mode": "apikey", "OPENAI_API_KEY": CODEX_KEY}
    (home / "auth.json").write_text(json.dumps(auth))
    monkeypatch.setenv("CODEX_HOME", str(home))


def settings_for(tmp_path: Path, data_dir: Path, **overrides: Any) -> Settings:
    overrides.setdefault("claude_command", CLAUDE or "rlm-mcp-test-no-claude")
    overrides.setdefault("codex_command", CODEX or "rlm-mcp-test-no-codex")
    overrides.setdefault("retry_base_s", 0.01)
    return make_settings(tmp_path, data_dir, **overrides)


@needs_claude
async def test_auto_uses_the_claude_code_login_without_an_api_key(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    claude_logged_in(monkeypatch)
    async with Client(build_server(settings_for(tmp_path, data_dir))) as client:
        assert await value_of(client, "llm_query('What is six times seven?')") == "'ans:What is six times seven?'"
        result = await run(client, "llm_query_batched(['one', 'two'])")
        assert "on a subscription login: API prices, not charged" in text_of(result), text_of(result)
    (request, *_) = [request for request in provider.requests if request.api == "anthropic"]
    assert request.api_key == OAUTH and request.headers["authorization"] == f"Bearer {OAUTH}"
    assert request.body["tools"] == [] and request.body["stream"] is True
    assert "You are a precise assistant" in (request.system or "")  # ours, not Claude Code's 16k-token preamble
    assert len(request.system or "") < 1_000
    assert request.prompt.endswith("What is six times seven?")


@needs_claude
async def test_claude_code_batches_keep_their_order_and_a_failing_call_fails_alone(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    claude_logged_in(monkeypatch)
    provider.jitter = (0.0, 0.3)
    provider.fail_when("poison", status=400, message="this prompt is refused")
    settings = settings_for(tmp_path, data_dir, backend="claude-code", cli_concurrency=3, sub_retries=1)
    async with Client(build_server(settings)) as client:
        code = "r = llm_query_batched([f'q{i}' if i != 3 else 'poison' for i in range(7)])\n[str(x)[:60] for x in r]"
        result = await run(client, code)
        data = result.structured_content or {}
        assert data.get("outcome") == "ok", text_of(result)
        answers = eval(data["result"])  # a list of short strs, printed by the REPL
        assert answers[:3] == ["ans:q0", "ans:q1", "ans:q2"] and answers[4:] == ["ans:q4", "ans:q5", "ans:q6"]
        assert "this prompt is refused" in answers[3] or "400" in answers[3]
        assert await value_of(client, "isinstance(r[3], LLMError)") == "True"
    answered = [request for request in provider.requests if request.api == "anthropic" and request.status == 200]
    assert len(answered) == 6 and provider.max_in_flight <= 3  # (the CLI itself tries a 400 again, twice)


async def test_a_hanging_cli_is_killed_with_its_children_at_the_timeout(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    """A stand-in `claude` that says it is logged in, then hangs with a child of its own."""
    pids = tmp_path / "pids"
    fake = tmp_path / "bin" / "claude"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = auth ]; then echo \'{"loggedIn": true, "authMethod": "oauth_token"}\'; exit 0; fi\n'
        f"sleep 300 & echo $! >> {pids}\n"
        f"echo $$ >> {pids}\n"
        "wait\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    settings = settings_for(tmp_path, data_dir, claude_command=str(fake), sub_timeout_s=1.0, sub_retries=0)
    async with Client(build_server(settings)) as client:
        started = time.monotonic()
        result = await run(client, "llm_query_batched(['hang'])[0]")
        assert "no answer from the CLI in 1 s" in text_of(result), text_of(result)
        assert time.monotonic() - started < 15
    killed = [int(pid) for pid in pids.read_text().split()]
    assert len(killed) >= 2  # the CLI and its child (and those of the spare started for the next call)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(pid) for pid in killed):
        time.sleep(0.05)
    assert not [pid for pid in killed if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


@needs_claude
async def test_the_login_never_reaches_the_repl(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    claude_logged_in(monkeypatch)
    credentials = Path(os.environ["HOME"]) / ".claude" / ".credentials.json"
    credentials.parent.mkdir()
    credentials.write_text(json.dumps({"claudeAiOauth": {"accessToken": OAUTH}}))
    codex = Path(os.environ["HOME"]) / ".codex"
    codex_home(monkeypatch, provider, codex)
    async with Client(build_server(settings_for(tmp_path, data_dir))) as client:
        assert await value_of(client, "llm_query('hello')") == "'ans:hello'"  # the login works for the server
        probe = (
            "import os\n"
            "found = [k for k, v in os.environ.items() if 'fake' in v or k.startswith(('CLAUDE', 'CODEX'))]\n"
            "def readable(path):\n"
            "    try:\n"
            "        open(path).read(); return True\n"
            "    except OSError:\n"
            "        return False\n"
            f"(found, readable({str(credentials)!r}), readable({str(codex / 'auth.json')!r}))"
        )
        assert await value_of(client, probe) == "([], False, False)"


@needs_claude
async def test_repl_code_cannot_put_an_option_on_the_clis_command_line(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    """The model name and the system prompt come from REPL code: a name is checked and passed as one
    `--model=NAME` argument, and the system prompt goes in a file, never on the command line."""
    claude_logged_in(monkeypatch)
    async with Client(build_server(settings_for(tmp_path, data_dir, backend="claude-code"))) as client:
        refused = await run(client, "llm_query('x', model='--dangerously-skip-permissions')")
        assert "is not a model name" in text_of(refused), text_of(refused)
        long_system = "Answer in French. " + "x" * 200_000  # over one command-line argument's limit (128 KiB)
        answered = await value_of(client, f"llm_query('bonjour', system={long_system!r})")
        assert answered == "'ans:bonjour'"
    model_calls = [request for request in provider.requests if request.api == "anthropic"]
    assert len(model_calls) == 1 and "Answer in French." in (model_calls[0].system or "")


@needs_codex
async def test_auto_falls_to_codex_when_claude_code_is_not_logged_in(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    codex_home(monkeypatch, provider, tmp_path / "codex", chatgpt=True)
    async with Client(build_server(settings_for(tmp_path, data_dir))) as client:  # claude: installed, no login
        result = await run(client, "llm_query('the meaning of life')")
        assert "ans:the meaning of life" in text_of(result), text_of(result)
    (request,) = [request for request in provider.requests if request.api == "responses"]
    assert request.prompt.endswith("the meaning of life") and request.headers.get("chatgpt-account-id") == "acct-fake"


@needs_codex
async def test_codex_with_an_api_key_login_answers_a_batch_in_order(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    codex_home(monkeypatch, provider, tmp_path / "codex")
    provider.jitter = (0.0, 0.2)
    settings = settings_for(tmp_path, data_dir, backend="codex")
    async with Client(build_server(settings)) as client:
        answers = await value_of(client, "llm_query_batched([f'c{i}' for i in range(5)])")
        assert answers == repr([f"ans:c{i}" for i in range(5)])
    assert {request.api_key for request in provider.requests if request.api == "responses"} == {CODEX_KEY}


def stand_in_mcp_server(tmp_path: Path, name: str, marker_name: str) -> tuple[Path, str]:
    """A stand-in for one of the user's MCP servers: the command records that it was started, then exits.
    Returns the marker it writes and the TOML of its `[mcp_servers.<name>]` table (a quoted key)."""
    marker = tmp_path / f"started-{marker_name}"
    script = tmp_path / "mcp_stand_in.py"
    script.write_text("import pathlib, sys\npathlib.Path(sys.argv[1]).write_text('started')\n")
    table = f"[mcp_servers.{json.dumps(name)}]\ncommand = {json.dumps(sys.executable)}\n"
    table += f"args = [{json.dumps(str(script))}, {json.dumps(str(marker))}]\n"
    return marker, table


@needs_codex
async def test_a_codex_sub_call_starts_none_of_the_users_mcp_servers(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    """The user's Codex config names MCP servers (one with a dot and a quote in its name); a sub-call
    through codex must start none of them: an injected sub-model would otherwise have their tools."""
    home = tmp_path / "codex"
    codex_home(monkeypatch, provider, home)
    plain, plain_table = stand_in_mcp_server(tmp_path, "files", "plain")
    odd, odd_table = stand_in_mcp_server(tmp_path, 'odd.name "quoted"', "odd")
    config = home / "config.toml"
    config.write_text('default_tools_approval_mode = "approve"\n' + config.read_text() + plain_table + odd_table)
    settings = settings_for(tmp_path, data_dir, backend="codex", cli_concurrency=1)
    async with Client(build_server(settings)) as client:
        assert await value_of(client, "llm_query('hello')") == "'ans:hello'"
    assert not plain.exists() and not odd.exists()
    config.write_text(config.read_text() + "[mcp_servers.broken\n")  # a config codex cannot read: no sub-call
    async with Client(build_server(settings)) as client:
        refused = await run(client, "llm_query('hello again')")
        assert "MCP servers" in text_of(refused) and "ans:" not in text_of(refused), text_of(refused)


@needs_claude
async def test_a_claude_code_sub_call_starts_none_of_the_users_mcp_servers(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MCP servers in the user's ~/.claude.json and settings, and in a .mcp.json where the CLI runs: `claude -p`
    starts none of them (--strict-mcp-config with no --mcp-config, and no setting sources: either holds)."""
    from rlm_mcp.llm.claude_code_backend import ClaudeCodeBackend
    from rlm_mcp.llm.types import SubCall

    claude_logged_in(monkeypatch)
    markers = {where: tmp_path / f"started-{where}" for where in ("user", "settings", "project")}
    script = tmp_path / "mcp_stand_in.py"
    script.write_text("import pathlib, sys\npathlib.Path(sys.argv[1]).write_text('started')\n")

    def servers(where: str) -> str:
        return json.dumps(
            {"mcpServers": {where: {"command": sys.executable, "args": [str(script), str(markers[where])]}}}
        )

    home = Path(os.environ["HOME"])
    (home / ".claude.json").write_text(servers("user"))
    (home / ".claude").mkdir()
    (home / ".claude" / "settings.json").write_text(servers("settings")[:-1] + ', "enableAllProjectMcpServers": true}')
    backend = ClaudeCodeBackend(str(CLAUDE), concurrency=1, subscription=True)
    try:
        (Path(backend._workdir.name) / ".mcp.json").write_text(servers("project"))  # where the CLI runs
        answer = await backend.complete(SubCall("hello", None, "claude-haiku-4-5", 100), 60)
        assert answer.text == "ans:hello"
    finally:
        await backend.aclose()
    assert not [where for where, marker in markers.items() if marker.exists()]


@needs_claude
@needs_codex
async def test_auto_prefers_a_key_then_claude_code_then_codex(
    provider: FakeProvider, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path
) -> None:
    claude_logged_in(monkeypatch)
    codex_home(monkeypatch, provider, tmp_path / "codex")
    async with Client(build_server(settings_for(tmp_path, data_dir))) as client:
        await value_of(client, "llm_query('which')")
    assert [request.api for request in provider.requests if request.api] == ["anthropic"]  # claude-code, via the CLI
    assert provider.requests[-1].headers.get("user-agent", "").startswith("claude-cli/")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake-key")
    logins.forget()
    async with Client(build_server(settings_for(tmp_path, data_dir))) as client:
        await value_of(client, "llm_query('which now')")
    assert not provider.requests[-1].headers.get("user-agent", "").startswith("claude-cli/")  # the SDK, with the key


async def test_with_nothing_configured_the_error_names_every_option(
    provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
        result = await run(client, "llm_query('x')")
    text = text_of(result)
    for option in ("ANTHROPIC_API_KEY", "RLM_MCP_OPENAI_BASE_URL", "claude setup-token", "codex login", "sampling"):
        assert option in text, text


@needs_claude
def test_doctor_says_which_backends_would_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_dir: Path) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    environ = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "CLAUDE_CODE_OAUTH_TOKEN": OAUTH}
    lines = "\n".join(backend_lines(settings_for(tmp_path, data_dir, codex_command="rlm-mcp-no-codex"), environ))
    assert "NO   anthropic    ANTHROPIC_API_KEY is not set" in lines
    assert "yes  claude-code" in lines and "oauth_token" in lines and "subscription" in lines
    assert "NO   codex        `rlm-mcp-no-codex` is not installed" in lines


async def test_spare_processes_serve_the_next_call_and_are_stopped_when_unused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A stand-in `claude` that answers from its stdin: each call takes the spare the last one started."""
    from rlm_mcp.llm import cli_process
    from rlm_mcp.llm.claude_code_backend import ClaudeCodeBackend
    from rlm_mcp.llm.types import SubCall
    from rlm_mcp.sandbox import exposure

    starts = tmp_path / "starts"
    fake = tmp_path / "claude"
    fake.write_text(
        "#!/bin/sh\n"
        f"echo $$ >> {starts}\n"
        "read -r prompt\n"
        'printf \'{"type":"result","subtype":"success","is_error":false,"result":"got %s",'
        '"usage":{"input_tokens":3,"output_tokens":2},"total_cost_usd":0.001,"modelUsage":{"m":{}}}\' "$prompt"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(exposure._workers, "readable", False)  # as a locked-down worker reports
    backend = ClaudeCodeBackend(str(fake), concurrency=2, subscription=True, environ={"PATH": os.environ["PATH"]})
    try:
        first = await backend.complete(SubCall("one\n", None, "m", 10), 10)
        second = await backend.complete(SubCall("two\n", None, "m", 10), 10)
        assert (first.text, second.text, second.subscription, second.cost_usd) == ("got one", "got two", True, 0.001)
        pids = [int(pid) for pid in starts.read_text().split()]
        assert len(pids) == 3  # the first call's process, the spare the second call took, and the next spare
        spare = pids[-1]
        assert _alive(spare)
        monkeypatch.setattr(cli_process, "SPARE_TTL_S", 0.0)
        backend.reap()
        deadline = time.monotonic() + 5
        while _alive(spare) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(spare)
    finally:
        await backend.aclose()
