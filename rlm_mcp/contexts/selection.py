"""Choosing which files of a directory or glob to load.

Runs in the server (it only stats files; the worker reads them). It honours .gitignore files the way git
does (nested files, negation, directory-only patterns, and the .gitignore files of enclosing directories up
to the repository's top), never follows a symlink out of the allowed roots, and stops at the caps while
still counting what it left out, so the model learns what it did not get and why.
"""

from __future__ import annotations

import os
import re
import stat
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pathspec

from rlm_mcp.contexts.paths import TreeSource, within

ALWAYS_SKIPPED_DIRS = frozenset({".git", ".hg", ".svn"})
EXAMPLES_PER_REASON = 3


@dataclass(frozen=True)
class Caps:
    max_files: int
    max_bytes: int
    max_file_bytes: int


@dataclass
class Selection:
    base: Path
    files: list[str] = field(default_factory=list)
    total_bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, rel: str) -> None:
        self.skipped[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(rel)


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Shell glob to regex with '**' spanning directories (fnmatch has no '**'; PurePath.full_match is 3.13+)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1 : end]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


class GitIgnore:
    """The .gitignore rules in force at each directory; deeper files override shallower ones, as in git.

    Paths are plain strings here: this runs once per file of trees with 100k files, where pathlib's
    objects cost more than the matching itself.
    """

    def __init__(self, base: Path, roots: tuple[Path, ...]) -> None:
        self._specs: dict[str, pathspec.GitIgnoreSpec] = {}
        for ancestor in _enclosing_repo_dirs(base, roots):
            self.load(str(ancestor))

    def load(self, directory: str) -> None:
        try:
            with open(os.path.join(directory, ".gitignore"), encoding="utf-8", errors="replace") as handle:
                text = handle.read()
        except OSError:
            return
        self._specs[directory] = pathspec.GitIgnoreSpec.from_lines(text.splitlines())

    def ignored(self, path: str, is_dir: bool) -> bool:
        if not self._specs:
            return False
        governing = []  # directories above `path` that hold a .gitignore, deepest first
        cut = path.rfind(os.sep)
        while cut > 0:
            if path[:cut] in self._specs:
                governing.append(path[:cut])
            cut = path.rfind(os.sep, 0, cut)
        verdict = False
        for directory in reversed(governing):
            rel = path[len(directory) + 1 :].replace(os.sep, "/") + ("/" if is_dir else "")
            include = self._specs[directory].check_file(rel).include
            if include is not None:
                verdict = include
        return verdict


def _enclosing_repo_dirs(base: Path, roots: tuple[Path, ...]) -> list[Path]:
    """Directories above `base` whose .gitignore applies to it: up to the repository top, within the roots."""
    chain = []
    for ancestor in base.parents:
        if not within(ancestor, roots):
            break
        chain.append(ancestor)
        if (ancestor / ".git").exists():
            return list(reversed(chain))
    return []  # not inside a repository (below a root): only .gitignore files at or below base apply


def select_files(source: TreeSource, roots: tuple[Path, ...], caps: Caps, exclude: tuple[str, ...] = ()) -> Selection:
    """`exclude`: globs relative to the base ("vendor/**"); without a "/" a glob matches the file's name at any
    depth ("*.min.js"), as in .gitignore. A match is skipped as "excluded"."""
    base = source.base
    matcher = glob_regex(source.pattern) if source.pattern else None
    excluded = [(glob_regex(pattern), "/" in pattern) for pattern in exclude]
    rules = GitIgnore(base, roots)
    selection = Selection(base)
    top = str(base)
    for dirpath, dirnames, filenames in os.walk(top):
        rules.load(dirpath)
        prefix = "" if dirpath == top else dirpath[len(top) + 1 :].replace(os.sep, "/") + "/"
        kept_dirs = []
        for name in sorted(dirnames):
            path = os.path.join(dirpath, name)
            rel = prefix + name
            if name in ALWAYS_SKIPPED_DIRS:
                continue
            if rules.ignored(path, is_dir=True):
                selection.skip("gitignored", rel + "/")
            elif os.path.islink(path):
                selection.skip("symlinked_dir", rel + "/")
            else:
                kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            rel = prefix + name
            if matcher is not None and not matcher.match(rel):
                continue
            if any(pattern.match(rel if by_path else name) for pattern, by_path in excluded):
                selection.skip("excluded", rel)
                continue
            path = os.path.join(dirpath, name)
            if rules.ignored(path, is_dir=False):
                selection.skip("gitignored", rel)
                continue
            _consider_file(selection, path, rel, roots, caps)
    return selection


def _consider_file(selection: Selection, path: str, rel: str, roots: tuple[Path, ...], caps: Caps) -> None:
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            if not within(Path(path).resolve(), roots):
                selection.skip("outside_roots", rel)
                return
            info = os.stat(path)
    except OSError:
        selection.skip("unreadable", rel)
        return
    if not stat.S_ISREG(info.st_mode):
        selection.skip("not_regular", rel)
    elif info.st_size > caps.max_file_bytes:
        selection.skip("too_large", rel)
    elif len(selection.files) >= caps.max_files:
        selection.skip("over_file_cap", rel)
    elif selection.total_bytes + info.st_size > caps.max_bytes:
        selection.skip("over_byte_cap", rel)
    else:
        selection.files.append(rel)
        selection.total_bytes += info.st_size


def tree_summary(files: list[str], top: int = 8) -> str:
    """Counts by extension and by top-level directory: enough for a model to plan how to split the work."""
    extensions = Counter(os.path.splitext(rel)[1] or "(none)" for rel in files)
    directories = Counter(rel.split("/", 1)[0] if "/" in rel else "." for rel in files)
    by_extension = ", ".join(f"{extension} {count:,}" for extension, count in extensions.most_common(top))
    by_directory = ", ".join(f"{name} {count:,}" for name, count in directories.most_common(top))
    more = f" (+{len(extensions) - top} more kinds)" if len(extensions) > top else ""
    return f"by extension: {by_extension}{more}; by top directory: {by_directory}"
