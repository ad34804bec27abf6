"""Settings from flags and environment, and the promises the README, server.json and CI make."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlm_mcp import __version__
from rlm_mcp.cli import build_parser
from rlm_mcp.config import Settings, env_name, flag_name, load_settings
from rlm_mcp.errors import SettingsError

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11 on")

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_environment_fills_every_kind_of_setting(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    environ = {
        "RLM_MCP_ROOTS": f"{tmp_path / 'a'}:{tmp_path / 'b'}",
        "RLM_MCP_WORKSPACE": str(tmp_path / "ws"),
        "RLM_MCP_TIMEOUT_S": "2.5",
        "RLM_MCP_DIR_MAX_FILES": "7",
        "RLM_MCP_LOG_LEVEL": "DEBUG",
    }
    settings = load_settings(environ=environ)
    assert settings.roots == (tmp_path / "a", tmp_path / "b")
    assert settings.workspace == tmp_path / "ws"
    assert settings.timeout_s == 2.5 and settings.dir_max_files == 7 and settings.log_level == "DEBUG"


def test_flags_override_the_environment(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--timeout-s", "3", "--root", str(tmp_path), "--root", str(tmp_path)])
    overrides = {field: getattr(args, field) for field in Settings.model_fields}
    settings = load_settings(overrides, environ={"RLM_MCP_TIMEOUT_S": "9"})
    assert settings.timeout_s == 3 and settings.roots == (tmp_path, tmp_path)


def test_invalid_values_name_their_source(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="RLM_MCP_DIR_MAX_FILES"):
        load_settings(environ={"RLM_MCP_DIR_MAX_FILES": "-1"})
    with pytest.raises(SettingsError, match=r"--root.*not a directory"):
        load_settings({"roots": [tmp_path / "missing"]}, environ={})


def test_every_setting_has_a_flag_an_env_var_and_a_readme_row() -> None:
    help_text = " ".join(build_parser().format_help().split())
    for field in Settings.model_fields:
        assert flag_name(field) in help_text and env_name(field) in help_text, field
        row = re.search(rf"^\| `{re.escape(flag_name(field))}[^|]*\| `{env_name(field)}`", README, re.MULTILINE)
        assert row, f"README settings table lacks {flag_name(field)} / {env_name(field)}"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.DOTALL)
    assert first_block and README.index(first_block.group(0)) < README.index("## ")
    serve, test = (line.split("#")[0].strip() for line in first_block.group(1).strip().splitlines())
    assert serve.endswith("&& rlm-mcp")
    ci_script = (REPO / ".ci" / "run").read_text()
    assert test in ci_script.splitlines(), "CI must run exactly the README's test command"


def test_server_json_follows_the_registry_schema() -> None:
    server = json.loads((REPO / "server.json").read_text())
    assert server["$schema"] == "https://static.modelcontextprotocol.io/schemas/2025-12-11/server.schema.json"
    assert re.fullmatch(r"io\.github\.[A-Za-z0-9-]+/rlm-mcp", server["name"])
    assert f"<!-- mcp-name: {server['name']} -->" in README
    assert 0 < len(server["description"]) <= 100
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert server["version"] == project["version"] == __version__
    (package,) = server["packages"]
    assert package["registryType"] == "pypi" and package["identifier"] == project["name"] == "rlm-mcp"
    assert package["version"] == __version__ and package["runtimeHint"] == "uvx"
    assert package["transport"] == {"type": "stdio"}
    declared = {variable["name"]: variable for variable in package["environmentVariables"]}
    provider_variables = {"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"}
    assert set(declared) == {env_name(field) for field in Settings.model_fields} | provider_variables
    for field, info in Settings.model_fields.items():
        assert declared[env_name(field)]["description"] == info.description
    secrets = {name for name, variable in declared.items() if variable["isSecret"]}
    assert secrets == {"ANTHROPIC_API_KEY", "RLM_MCP_OPENAI_API_KEY", "RLM_MCP_AUTH_TOKEN"}


def test_dependencies_are_bounded_by_major_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10"
    for requirement in project["dependencies"]:
        assert re.search(r">=[\d.]+,<\d+", requirement), requirement
    assert project["scripts"] == {"rlm-mcp": "rlm_mcp.cli:main"}


def test_help_runs_without_importing_the_server() -> None:
    probe = "import sys; from rlm_mcp.cli import build_parser; build_parser(); print('mcp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_default_workspace_is_absolute_even_under_a_relative_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", "relative-home")
    monkeypatch.setenv("XDG_STATE_HOME", "relative-state")  # not absolute: ignored, as the XDG spec says
    workspace = load_settings({}, environ={}).workspace
    assert workspace == tmp_path / "relative-home" / ".local" / "state" / "rlm-mcp"


def test_every_test_the_security_ledger_names_exists() -> None:
    """docs/security.md says which test holds each attack: a renamed or deleted test must not leave the
    ledger pointing at nothing."""
    ledger = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
    named = set(re.findall(r"(?:\.py)?::(test_\w+)", ledger))
    defined = {
        name for path in (REPO / "tests").rglob("test_*.py") for name in re.findall(r"def (test_\w+)", path.read_text())
    }
    assert len(named) > 40 and named <= defined, sorted(named - defined)
