"""bubblewrap's mounts when the Python installation lies inside a directory the worker must not see.

uvx caches, CI checkouts and `python -m venv /tmp/x` put the interpreter under /tmp; the workspace may be
there too. The worker's mounts, and the probe that decides whether bubblewrap is used at all, must keep the
installation reachable without revealing the hidden directory around it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from rlm_mcp.sandbox import bubblewrap


def options_of(argv: list[str], descriptor: int) -> list[str]:
    try:
        data = os.read(descriptor, 1 << 20)
    finally:
        os.close(descriptor)
    assert argv[1:3] == ["--args", str(descriptor)]
    return data.decode().split("\0")[:-1]


def test_python_inside_a_hidden_directory_is_bound_back_read_only(tmp_path: Path) -> None:
    package_parent = str(Path(bubblewrap.__file__).resolve().parents[2])
    hidden = os.path.dirname(package_parent)  # the directory that holds this checkout (or site-packages)
    argv, descriptor = bubblewrap.command("bwrap", [sys.executable], [str(tmp_path)], hidden=[hidden])
    options = options_of(argv, descriptor)
    bound = [options[i + 1] for i, option in enumerate(options) if option == "--ro-bind" and options[i + 1] != "/"]
    assert package_parent in bound  # the package comes back, read-only
    assert hidden not in bound and not any(hidden.startswith(path + "/") for path in bound)  # never its cover
    assert options.index("--tmpfs") < options.index(package_parent)  # bound after the cover is mounted


def test_no_python_directory_is_bound_when_nothing_holds_one(tmp_path: Path) -> None:
    assert bubblewrap.python_under([str(tmp_path / "workspace")]) == []


def test_the_probe_runs_the_workers_command_under_its_hidden_directories() -> None:
    bwrap, why = bubblewrap.availability()
    if bwrap is None:
        pytest.skip(f"bubblewrap does not run here: {why}")
    package_parent = str(Path(bubblewrap.__file__).resolve().parents[2])
    for hidden in (os.path.dirname(package_parent), os.path.dirname(os.path.realpath(sys.prefix))):
        found, detail = bubblewrap.availability((hidden,))
        assert found == bwrap, f"bubblewrap dropped with {hidden} hidden: {detail}"
