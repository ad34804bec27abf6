"""The bounded glob matcher (rlm_mcp/contexts/globs.py) and what selection builds on it: globs, excludes and
.gitignore rules from untrusted sources cannot hold the server, and the meaning of a glob is unchanged.

Cost is asserted through `Glob.steps`, a count of segment tests, never through wall-clock time (the machine
is shared); a hang is caught by running the work in a thread with a generous join timeout.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from mcp import Client

from rlm_mcp.contexts import selection
from rlm_mcp.contexts.globs import (
    MAX_PATTERN_CHARS,
    MAX_PATTERN_SEGMENTS,
    MAX_PATTERN_WILDCARDS,
    compile_glob,
    split_glob,
)
from rlm_mcp.contexts.paths import TreeSource
from rlm_mcp.contexts.selection import MAX_EXCLUDES, MAX_GITIGNORE_BYTES, MAX_GITIGNORE_RULES, Caps, select_files
from rlm_mcp.errors import ContextError
from tests.conftest import load, text_of, value_of

pytestmark = pytest.mark.anyio

T = TypeVar("T")
CAPS = Caps(max_files=10_000, max_bytes=10**9, max_file_bytes=10**9)
ISSUE_GLOB = "**/" * 10 + "zz"  # the pattern of issue 12, below "deep/"
DEEP = 30
NAME = "a" * 60  # long names: the `*a*a*...b` rule costs pathspec's regex 22 s on one such name


def finishes(work: Callable[[], T], timeout_s: float = 20.0) -> T:
    """Run `work` in a thread; fail (instead of hanging the suite) if it is not done within `timeout_s`."""
    outcome: dict[str, T | BaseException] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"did not finish within {timeout_s} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]


def deep_tree(top: Path, leaf: str = "zz") -> list[str]:
    """DEEP nested directories named NAME under `top`, a `c.txt` in each and `leaf` at the bottom; the
    files' relative paths, the leaf's last."""
    files, directory, rel = [], top, ""
    for _ in range(DEEP):
        directory, rel = directory / NAME, rel + NAME + "/"
        directory.mkdir(parents=True)
        (directory / "c.txt").write_text("c\n")
        files.append(rel + "c.txt")
    (directory / leaf).write_text("leaf\n")
    return [*files, rel + leaf]


def tree(top: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(content)
    return top


def select(
    base: Path, pattern: str | None = None, exclude: tuple[str, ...] = (), root: Path | None = None, **options: float
) -> selection.Selection:
    return finishes(lambda: select_files(TreeSource(base, pattern), (root or base,), CAPS, exclude, **options))


# -- what a glob means --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("*.py", "a.py", True),
        ("*.py", "src/a.py", False),  # `*` does not cross "/"
        ("*", ".hidden", True),
        ("a*b", "a/b", False),
        ("a?b", "a/b", False),  # nor does `?`
        ("a?b", "axb", True),
        ("data/file?.[ch]", "data/file1.c", True),
        ("data/file?.[ch]", "data/file12.c", False),
        ("[!a]*", "b.txt", True),
        ("[!a]*", "a.txt", False),
        ("[a-c]x", "bx", True),
        ("[z-a]x", "zx", False),  # an empty range matches nothing (the old regex raised re.error)
        ("a[", "a[", True),  # an unclosed bracket is literal
        ("a\\b", "a\\b", True),  # so is a backslash
        ("**/*.py", "a.py", True),  # `**/` spans zero directories...
        ("**/*.py", "src/pkg/a.py", True),  # ...or more
        ("**/*.py", "a.pyc", False),
        ("src/**/*.py", "src/a.py", True),
        ("src/**/*.py", "src/a/b/c.py", True),
        ("src/**/*.py", "lib/a.py", False),
        ("a/**/b", "a/x/y/b", True),
        ("a/**/b", "a/x/y/c", False),
        ("src/**", "src/x/y.txt", True),  # a trailing `**` matches everything below...
        ("src/**", "src/a", True),
        ("src/**", "src", False),  # ...but not the directory itself
        ("**", "x", True),
        ("**", "x/y/z", True),
        ("**/vendor/**", "src/vendor/x.js", True),
        ("**/vendor/**", "vendor", False),
        ("a/**/**/b", "a/b", True),  # repeats collapse to one `**`
        ("**/**/x", "x", True),
        ("a**b", "axyb", True),  # `**` inside a segment is a plain `*`, as in git
        ("a**b", "a/b", False),
        ("a/*/c", "a/b/c", True),
        ("a/*/c", "a/b/b/c", False),
    ],
)
def test_glob_semantics(pattern: str, path: str, expected: bool) -> None:
    assert compile_glob(pattern).match(path) is expected


def test_directories_a_walk_may_skip_or_exclude_whole() -> None:
    assert compile_glob("*/x/*.py").may_match_below(["a"])
    assert not compile_glob("*/x/*.py").may_match_below(["a", "y"])
    assert not compile_glob("*.py").may_match_below(["a"])
    assert compile_glob("**/vendor/**").matches_all_below(["src", "vendor"])
    assert not compile_glob("**/vendor/**").matches_all_below(["src"])
    assert not compile_glob("**/vendor/*.js").matches_all_below(["vendor"])
    assert split_glob("a/**/**/**/b") == ["a", "**", "b"]


# -- cost ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    [
        "deep/" + ISSUE_GLOB,
        "/".join(["**", "a"] * 30) + "/b",  # 60 segments, 30 `**` that cannot collapse: exponential as a regex
        "/".join(["**", "*a*a*a*a*a*a*a*a*a"] * 20) + "/b",
    ],
)
def test_a_match_costs_at_most_pattern_segments_times_path_segments(pattern: str) -> None:
    glob = compile_glob(pattern)
    for path in ("deep/" + "/".join(["a"] * DEEP) + "/c", "/".join(["a" * 250] * 16), "/".join(["a"] * 2_000)):
        glob.steps = 0
        assert finishes(lambda: glob.match(path)) is False  # noqa: B023  # run and joined in this iteration
        assert glob.steps <= len(split_glob(pattern)) * len(path.split("/"))


def test_the_issue_glob_and_a_pathological_exclude_finish_on_a_deep_tree(tmp_path: Path) -> None:
    expected = deep_tree(tmp_path / "deep")
    found = select(tmp_path / "deep", ISSUE_GLOB)
    assert found.files == [expected[-1]]
    exclude = "/".join(["**", "*a*"] * 25) + "/c.txt"  # 51 segments, 25 `**` that cannot collapse
    glob = compile_glob(exclude, "exclude pattern")  # the object select_files gets from the cache
    glob.steps = 0
    kept = select(tmp_path / "deep", exclude=(exclude,))
    assert kept.skipped["excluded"] == DEEP - 25 + 1 and len(kept.files) == 25
    entries = 2 * DEEP + 1  # every directory and file is tested once
    assert glob.steps <= 10 * len(split_glob(exclude)) * (DEEP + 1) * entries


def test_a_pathological_gitignore_finishes_and_its_dropped_rules_are_reported(tmp_path: Path) -> None:
    """Each of these rules froze pathspec's matcher (seconds to hours on one deep path); here they cost a
    polynomial number of segment tests, and a rule over the limits is left out and reported."""
    top = tmp_path / "deep"
    expected = deep_tree(top)
    rules = ["**/" * 50 + "x", "*a" * 8 + "b", "/".join(["**", "a*a"] * 20) + "/b", "*" * (MAX_PATTERN_CHARS + 1)]
    (top / ".gitignore").write_text("\n".join(rules) + "\n")
    globs = [compile_glob(rule, ".gitignore rule") for rule in rules[:3]]
    for glob in globs:
        glob.steps = 0
    found = select(top)
    assert sorted(found.files) == sorted([".gitignore", *expected])  # none of the rules matches, and none hung
    assert found.skipped["gitignore_rules_dropped"] == 1
    assert found.examples["gitignore_rules_dropped"] == [".gitignore line 4 (over the glob limits)"]
    for glob in globs:
        assert glob.steps <= 10 * len(split_glob(glob.pattern)) * (DEEP + 1) * len(found.files)


def test_a_huge_gitignore_is_read_up_to_its_caps_and_the_rest_reported(tmp_path: Path) -> None:
    many = "".join(f"*.x{index}\n" for index in range(MAX_GITIGNORE_RULES + 10)) + "*.txt\n"
    tree(tmp_path / "many", {".gitignore": many, "a.txt": "a\n", "a.x3": "x\n"})
    found = select(tmp_path / "many")
    assert found.files == [".gitignore", "a.txt"]  # rule 3 applies, the `*.txt` past the cap does not
    assert found.examples["gitignore_rules_dropped"] == [
        f".gitignore from line {MAX_GITIGNORE_RULES + 1:,} (over {MAX_GITIGNORE_RULES:,} rules)"
    ]
    big = "*.log\n" + "#" * MAX_GITIGNORE_BYTES + "\n*.txt\n"
    tree(tmp_path / "big", {".gitignore": big, "a.txt": "a\n", "b.log": "b\n"})
    found = select(tmp_path / "big")
    assert found.files == [".gitignore", "a.txt"]
    dropped = f".gitignore after line 1 (over {MAX_GITIGNORE_BYTES:,} bytes)"
    assert found.examples["gitignore_rules_dropped"] == [dropped]


def test_a_gitignore_that_is_a_fifo_is_not_read(tmp_path: Path) -> None:
    """Opening a FIFO for reading would block until a writer came: the scan would never end."""
    tree(tmp_path / "t", {"a.txt": "a\n"})
    os.mkfifo(tmp_path / "t" / ".gitignore")
    found = select(tmp_path / "t")
    assert found.files == ["a.txt"]
    assert found.examples["gitignore_rules_dropped"] == [".gitignore (not a regular file)"]


# -- limits -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "limit"),
    [
        ("a" * (MAX_PATTERN_CHARS + 1), f"the limit is {MAX_PATTERN_CHARS:,}"),
        ("/".join(["*"] * (MAX_PATTERN_SEGMENTS + 1)), f"the limit is {MAX_PATTERN_SEGMENTS}"),
        ("*?" * (MAX_PATTERN_WILDCARDS // 2 + 1), f"the limit is {MAX_PATTERN_WILDCARDS}"),
    ],
)
def test_a_pattern_over_the_limits_is_refused_with_what_to_do(tmp_path: Path, pattern: str, limit: str) -> None:
    with pytest.raises(ContextError, match=limit) as refused:
        select_files(TreeSource(tmp_path, pattern), (tmp_path,), CAPS)
    assert "glob" in str(refused.value)
    with pytest.raises(ContextError, match=limit) as refused:
        select_files(TreeSource(tmp_path), (tmp_path,), CAPS, ("ok/**", pattern))
    assert "the exclude pattern" in str(refused.value)


def test_repeated_double_stars_do_not_count_against_the_limits() -> None:
    assert compile_glob("**/" * 300 + "x").match("a/b/x")


def test_too_many_excludes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ContextError, match=f"the limit is {MAX_EXCLUDES}"):
        select_files(TreeSource(tmp_path), (tmp_path,), CAPS, tuple(f"*.x{index}" for index in range(101)))


def test_a_scan_past_its_deadline_stops_with_advice(tmp_path: Path) -> None:
    tree(tmp_path, {"a.txt": "a\n", "sub/b.txt": "b\n"})
    with pytest.raises(ContextError, match="took too long to scan") as stopped:
        select(tmp_path, deadline_s=0.0)
    assert "Narrow `path`" in str(stopped.value) and "`exclude`" in str(stopped.value)
    assert select(tmp_path, deadline_s=60.0).files == ["a.txt", "sub/b.txt"]


# -- excludes and .gitignore, as before ---------------------------------------------------------------


def test_excludes_match_names_at_any_depth_or_paths_and_skip_covered_directories(tmp_path: Path) -> None:
    tree(tmp_path, {"a.md": "", "d/b.md": "", "d/c.py": "", "vendor/x.py": "", "vendor/y/z.py": "", "e/vendor.py": ""})
    found = select(tmp_path, exclude=("*.md", "vendor/**"))
    assert found.files == ["d/c.py", "e/vendor.py"]
    assert found.skipped["excluded"] == 3 and found.examples["excluded"] == ["vendor/", "a.md", "d/b.md"]


@pytest.mark.parametrize(
    ("gitignore", "kept"),
    [
        ("*.log\n!keep.log\n", ["keep.log", "s/a.py", "s/b/c.txt"]),
        ("s/\n", ["a.log", "keep.log"]),  # a directory rule
        ("/s/b\n", ["a.log", "keep.log", "s/a.py"]),  # anchored
        ("b\n", ["a.log", "keep.log", "s/a.py"]),  # no "/": at any depth
        ("a.py/\n", ["a.log", "keep.log", "s/a.py", "s/b/c.txt"]),  # directories only: a file of that name stays
        ("**/b/*.txt\n", ["a.log", "keep.log", "s/a.py"]),
        ("s/**\n!s/a.py\n", ["a.log", "keep.log", "s/a.py"]),
        ("# *.log\n\\#x\n", ["a.log", "keep.log", "s/a.py", "s/b/c.txt"]),  # a comment, an escaped "#"
        ("*.py \n", ["a.log", "keep.log", "s/b/c.txt"]),  # trailing spaces are dropped
        ("*\n!*/\n!*.txt\n", ["s/b/c.txt"]),
    ],
)
def test_gitignore_rules_mean_what_they_mean_to_git(tmp_path: Path, gitignore: str, kept: list[str]) -> None:
    tree(tmp_path, {".gitignore": gitignore, "a.log": "", "keep.log": "", "s/a.py": "", "s/b/c.txt": ""})
    assert [rel for rel in select(tmp_path).files if rel != ".gitignore"] == kept


def test_gitignore_escapes_are_literal(tmp_path: Path) -> None:
    tree(tmp_path, {".gitignore": "a\\*b\n\\!imp\nsp\\ \n", "a*b": "", "axb": "", "!imp": "", "sp ": "", "sp": ""})
    assert select(tmp_path).files == [".gitignore", "axb", "sp"]


def test_loading_an_ignored_directory_of_a_repository_ignores_all_of_it(tmp_path: Path) -> None:
    tree(tmp_path, {".git/config": "", ".gitignore": "build/\n", "build/out/a.txt": "", "build/b.txt": ""})
    found = select(tmp_path / "build", root=tmp_path)
    assert found.files == [] and found.skipped["gitignored"] == 2


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git as the reference")
def test_gitignore_selection_agrees_with_git_on_random_trees(tmp_path: Path) -> None:
    rules = ["*.log", "!keep.log", "build/", "/build", "a/b", "b/", "**/c", "a/**", "!a/", "!*.py", "*.py", "x*"]
    rules += ["!x1", "/a/*.txt", "**/b/*.txt", "c/**/d", "d", "!d/", "a/**/b", "*.txt", "!b.txt", "b/*", "*/", "a?"]
    names = ["a", "b", "c", "d", "x1", "keep.log", "e.log", "m.py", "b.txt", "t.txt", "build"]
    chooser = random.Random(12)
    for trial in range(30):
        root = tmp_path / str(trial)
        subprocess.run(["git", "init", "-q", str(root)], check=True)
        for _ in range(25):
            path = root.joinpath(*(chooser.choice(names) for _ in range(chooser.randint(1, 4))))
            if not any(parent.is_file() for parent in path.parents) and not path.is_dir():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("x")
        directories = sorted(path for path in root.rglob("*") if path.is_dir() and ".git" not in path.parts)
        for directory in chooser.sample([root, *directories], min(3, len(directories) + 1)):
            (directory / ".gitignore").write_text("\n".join(chooser.sample(rules, 4)) + "\n")
        base = chooser.choice([root, *directories])
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--others", "--exclude-standard", "--", "."],
            cwd=base,
            capture_output=True,
            check=True,
        ).stdout.decode()
        expected = sorted(rel for rel in listed.split("\0") if rel)  # relative to `base`, where git ran
        assert sorted(select_files(TreeSource(base), (root,), CAPS).files) == expected, (trial, base)


# -- through the MCP client ---------------------------------------------------------------------------


async def test_the_issue_glob_returns_promptly_through_the_client(client: Client, data_dir: Path) -> None:
    files = deep_tree(data_dir / "deep")
    result = await load(client, path="deep/" + ISSUE_GLOB, name="found")
    assert not result.is_error, text_of(result)
    assert await value_of(client, "sorted(found)") == repr([files[-1]])
    result = await load(client, path="deep/" + "**/" * 10 + "nothing")
    assert result.is_error and "no files match" in text_of(result)


async def test_an_over_complex_pattern_gets_an_error_naming_the_limit(client: Client, data_dir: Path) -> None:
    (data_dir / "a.txt").write_text("a\n")
    result = await load(client, path="*" + "/*" * MAX_PATTERN_SEGMENTS)
    assert result.is_error and f"the limit is {MAX_PATTERN_SEGMENTS}" in text_of(result)
    result = await load(client, path=".", exclude=["?" * (MAX_PATTERN_WILDCARDS + 1)])
    assert result.is_error and f"the limit is {MAX_PATTERN_WILDCARDS}" in text_of(result)
    assert await value_of(client, "1 + 1") == "2"


def test_an_exclude_ending_in_a_slash_leaves_out_that_directory(tmp_path: Path) -> None:
    for rel in ("vendor/lib/a.py", "src/b.py", "build/c.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    chosen = select_files(TreeSource(tmp_path), (tmp_path,), Caps(100, 1 << 20, 1 << 20), ("vendor/", "/build/"))
    assert chosen.files == ["src/b.py"]
