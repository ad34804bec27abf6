"""Git's .gitignore rules where a deeper file overrides a shallower one."""

from __future__ import annotations

from pathlib import Path

from rlm_mcp.contexts.paths import TreeSource
from rlm_mcp.contexts.selection import Caps, select_files

CAPS = Caps(max_files=1_000, max_bytes=10_000_000, max_file_bytes=1_000_000)


def test_a_deeper_gitignore_re_includes_what_the_top_level_one_ignores(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.log\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".gitignore").write_text("!keep.log\n")
    for name in ("top.log", "sub/keep.log", "sub/drop.log", "sub/notes.txt"):
        (tmp_path / name).write_text(name)
    found = select_files(TreeSource(tmp_path, None), (tmp_path,), CAPS)
    assert sorted(found.files) == [".gitignore", "sub/.gitignore", "sub/keep.log", "sub/notes.txt"]
    assert found.skipped["gitignored"] == 2


def test_a_negation_in_the_same_file_comes_after_what_it_overrides(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("*.log\n!important.log\n")
    for name in ("a.log", "important.log"):
        (tmp_path / name).write_text(name)
    found = select_files(TreeSource(tmp_path, None), (tmp_path,), CAPS)
    assert sorted(found.files) == [".gitignore", "important.log"]
