"""Each `rlm-mcp` subcommand's flags (rlm_mcp/cli.py and rlm_mcp/commands/): `--help` exits 0 with its usage
and imports no server (a command's module is imported only when it runs, so help stays instant); bad input
exits 2 with a one-line reason, before any server is imported.

Both are checked in one fresh interpreter each (what a command imports is only visible in a clean
sys.modules), running every case in turn and reporting the modules each one added.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVER = "rlm_mcp.surface.server"

# Run each argv through rlm_mcp.cli.main in this one interpreter; print, per case, the exit status, the
# output and which rlm_mcp modules were loaded by then.
DRIVER = """
import contextlib, io, json, sys
from rlm_mcp.cli import main
report = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    loaded = sorted(name for name in sys.modules if name.startswith("rlm_mcp"))
    report.append({"argv": argv, "code": code, "out": out.getvalue(), "err": err.getvalue(), "loaded": loaded})
print(json.dumps(report))
"""

# The usage each command's --help prints: the shared parser's, or the command's own.
HELP = {
    "": "usage: rlm-mcp ",
    "serve": "usage: rlm-mcp ",
    "doctor": "usage: rlm-mcp ",
    "sessions": "usage: rlm-mcp ",
    "trace": "usage: rlm-mcp ",
    "ask": "usage: rlm-mcp ",
    "handbook": "usage: rlm-mcp handbook ",
    "replay": "usage: rlm-mcp replay ",
    "eval": "usage: rlm-mcp eval ",  # last: it imports the engine it drives (but still no server)
}
SHARED = ("", "serve", "doctor", "sessions", "trace", "ask")  # served by cli.py's parser alone


def drive(cases: list[list[str]], cwd: Path) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env = {name: value for name, value in env.items() if not name.startswith("RLM_MCP_")}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def helps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    cases = [[command, "--help"] if command else ["--help"] for command in HELP]
    cases.append(["handbook", "wipe", "--help"])
    report = drive(cases, tmp_path_factory.mktemp("help"))
    return {" ".join(case["argv"][:-1]): case for case in report}


@pytest.mark.parametrize("command", list(HELP), ids=lambda command: command or "rlm-mcp")
def test_help_exits_0_with_the_commands_usage_and_no_server(helps: dict[str, dict[str, Any]], command: str) -> None:
    case = helps[command]
    assert case["code"] == 0, case["err"]
    assert case["out"].startswith(HELP[command]), case["out"][:200]
    assert case["err"] == ""
    assert SERVER not in case["loaded"], f"`{' '.join(case['argv'])}` imported the MCP server"


@pytest.mark.parametrize("command", SHARED, ids=lambda command: command or "rlm-mcp")
def test_the_shared_help_imports_no_command_and_no_engine(helps: dict[str, dict[str, Any]], command: str) -> None:
    """Help is the parser's alone: no command module, no engine, no session, no surface."""
    heavy = [
        name
        for name in helps[command]["loaded"]
        if name.startswith(("rlm_mcp.commands.", "rlm_mcp.engine", "rlm_mcp.session", "rlm_mcp.surface"))
    ]
    assert heavy == []


def test_the_shared_help_lists_every_setting_with_its_environment_variable(helps: dict[str, dict[str, Any]]) -> None:
    from rlm_mcp.config import Settings, env_name, flag_name

    text = " ".join(helps[""]["out"].split())  # argparse wraps lines
    for field in Settings.model_fields:
        assert flag_name(field) in text and f"env {env_name(field)}" in text, field


def test_a_subcommands_own_help_lists_its_choices(helps: dict[str, dict[str, Any]]) -> None:
    handbook = helps["handbook"]["out"]
    for verb in ("list", "show", "edit", "delete", "export", "import", "distill", "review", "approve", "wipe"):
        assert verb in handbook
    wipe = helps["handbook wipe"]
    assert wipe["code"] == 0 and wipe["out"].startswith("usage: rlm-mcp handbook wipe ")
    assert "{all,behaviors,findings,cache}" in wipe["out"]


BAD = {
    "unknown command": (["bogus-command"], "invalid choice: 'bogus-command'"),
    "unknown flag": (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    "setting of the wrong type": (["--timeout-s", "soon"], "invalid float value: 'soon'"),
    "setting out of range": (["--timeout-s", "-1"], "--timeout-s"),
    "setting outside its choices": (["--transport", "carrier-pigeon"], "invalid choice: 'carrier-pigeon'"),
    "trace without a file": (["trace"], "give the trace"),
    "trace --follow without a session": (["trace", "--follow"], "give one session"),
    "ask without a question": (["ask", "only-a-path"], "give one or more paths, then the question"),
    "sessions with arguments": (["sessions", "extra"], "unexpected arguments extra"),
    "doctor with arguments": (["doctor", "extra"], "unexpected arguments extra"),
    "eval with a bad number": (["eval", "--records", "many"], "invalid int value: 'many'"),
    "eval with a bad study": (["eval", "--study", "other"], "invalid choice: 'other'"),
    "handbook without a verb": (["handbook"], "required: command"),
    "handbook with an unknown verb": (["handbook", "frobnicate"], "invalid choice: 'frobnicate'"),
    "handbook wipe of no such part": (["handbook", "wipe", "everything"], "invalid choice: 'everything'"),
    "replay without a trace": (["replay"], "required: TRACE"),
    "replay of no such file": (["replay", "no-such-trace.jsonl"], "no-such-trace.jsonl"),
}


@pytest.fixture(scope="module")
def refusals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    cwd = tmp_path_factory.mktemp("bad")
    workspace = ["--workspace", str(cwd / "workspace")]  # the shared parser's commands load settings first
    cases = [argv + workspace if argv[0] not in ("eval", "handbook", "replay") else argv for argv, _ in BAD.values()]
    return dict(zip(BAD, drive(cases, cwd), strict=True))


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_a_reason(refusals: dict[str, dict[str, Any]], case: str) -> None:
    got = refusals[case]
    assert got["code"] == 2, got
    assert BAD[case][1] in got["err"].strip().splitlines()[-1], got["err"]
    assert got["out"] == ""
    assert SERVER not in got["loaded"], "refusing bad input needs no MCP server"
