"""Choosing which files of a directory or glob to load.

Runs in the server (it only stats files; the worker reads them). It honours .gitignore files the way git
does (nested files, negation, directory-only patterns, and the .gitignore files of enclosing directories up
to the repository's top), never follows a symlink out of the allowed roots, and stops at the caps while
still counting what it left out, so the model learns what it did not get and why.

Everything it reads may be hostile (the pattern from a hijacked model, the tree and its .gitignore files from
anyone), so the work is bounded: globs, excludes and .gitignore rules go through the matcher of `globs`,
whose cost is polynomial and whose input is capped; .gitignore files are read up to a size; and the scan
stops at a deadline.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rlm_mcp.contexts.globs import Glob, compile_glob
from rlm_mcp.contexts.paths import TreeSource, within
from rlm_mcp.errors import ContextError

ALWAYS_SKIPPED_DIRS = frozenset({".git", ".hg", ".svn"})
EXAMPLES_PER_REASON = 3
MAX_EXCLUDES = 100
MAX_GITIGNORE_BYTES = 512 * 1024  # per file; GitHub's largest templates are a few KiB
MAX_GITIGNORE_RULES = 5_000  # per file
SCAN_DEADLINE_S = 30.0


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


@dataclass(frozen=True)
class _Rule:
    """One .gitignore rule. `anchored`: it has a "/" before its end, so it is matched against the path from the
    .gitignore's directory; otherwise against the name alone, at any depth."""

    glob: Glob
    anchored: bool
    negated: bool
    dir_only: bool


_ESCAPED = re.compile(r"\\(.)")


def _parse_rule(line: str) -> _Rule | None:
    """A .gitignore line as git reads it; None for blank lines and comments. Raises ContextError for a rule
    beyond the glob limits (the caller drops it and says so)."""
    if line.startswith("#"):
        return None
    text = line.rstrip(" ")
    if (len(text) - len(text.rstrip("\\"))) % 2 and len(text) < len(line):  # "foo\ " keeps its escaped space
        text += " "
    negated = text.startswith("!")
    text = text[1:] if negated else text
    dir_only = text.endswith("/")
    text = text[:-1] if dir_only else text
    anchored = "/" in text
    text = text[1:] if text.startswith("/") else text
    if not text:
        return None
    # "\*" is a literal star: the glob matcher takes backslashes literally, so say it as a one-character class.
    text = _ESCAPED.sub(lambda found: f"[{found[1]}]" if found[1] in "*?[\\" else found[1], text)
    return _Rule(compile_glob(text, ".gitignore rule"), anchored, negated, dir_only)


class GitIgnore:
    """The .gitignore rules in force at each directory; deeper files override shallower ones, as in git.

    The files come from the tree being loaded, so they are untrusted: each is read up to MAX_GITIGNORE_BYTES
    and MAX_GITIGNORE_RULES, its rules go through the bounded glob matcher (pathspec's one-regex-per-rule
    backtracks: one rule like `**/a/**/a/**/b` took 30 s on one deep path), and every rule left out is listed
    in `dropped`, for the result to report. A .gitignore that is a symlink, FIFO or device is not read.

    Paths are plain strings here: this runs once per file of trees with 100k files, where pathlib's
    objects cost more than the matching itself.
    """

    def __init__(self, base: Path, roots: tuple[Path, ...]) -> None:
        self._base = str(base)
        self._rules: dict[str, list[_Rule]] = {}
        self._everything = False
        self.dropped: list[str] = []
        chain = _enclosing_repo_dirs(base, roots)
        for ancestor in chain:
            self.load(str(ancestor))
        # The walk never tests `base` or the directories between it and the repository's top: if one of
        # them is ignored, so is everything below, as in git.
        self._everything = any(self.ignored(str(directory), is_dir=True) for directory in [*chain[1:], base])

    def load(self, directory: str) -> None:
        path = os.path.join(directory, ".gitignore")
        shown = os.path.relpath(path, self._base).replace(os.sep, "/")
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return
        except OSError:
            self.dropped.append(f"{shown} (not a regular file, or unreadable)")
            return
        with open(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                self.dropped.append(f"{shown} (not a regular file)")
                return
            data = handle.read(MAX_GITIGNORE_BYTES + 1)
        lines = data[:MAX_GITIGNORE_BYTES].decode("utf-8", errors="replace").splitlines()
        if len(data) > MAX_GITIGNORE_BYTES:
            lines.pop()  # cut mid-line
            self.dropped.append(f"{shown} after line {len(lines):,} (over {MAX_GITIGNORE_BYTES:,} bytes)")
        rules = []
        for number, line in enumerate(lines, 1):
            if len(rules) == MAX_GITIGNORE_RULES:
                self.dropped.append(f"{shown} from line {number:,} (over {MAX_GITIGNORE_RULES:,} rules)")
                break
            try:
                rule = _parse_rule(line)
            except ContextError:
                self.dropped.append(f"{shown} line {number:,} (over the glob limits)")
                continue
            if rule is not None:
                rules.append(rule)
        if rules:
            self._rules[directory] = rules

    def ignored(self, path: str, is_dir: bool) -> bool:
        """The verdict of the last rule matching `path`, looking at the deepest .gitignore first."""
        if self._everything:
            return True
        if not self._rules:
            return False
        name = path[path.rfind(os.sep) + 1 :]
        cut = path.rfind(os.sep)
        while cut > 0:
            rules = self._rules.get(path[:cut])
            if rules:
                rel = path[cut + 1 :].replace(os.sep, "/")
                for rule in reversed(rules):
                    if rule.dir_only and not is_dir:
                        continue
                    if rule.glob.match(rel) if rule.anchored else rule.glob.match_parts((name,)):
                        return not rule.negated
            cut = path.rfind(os.sep, 0, cut)
        return False


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


def select_files(
    source: TreeSource,
    roots: tuple[Path, ...],
    caps: Caps,
    exclude: tuple[str, ...] = (),
    *,
    deadline_s: float = SCAN_DEADLINE_S,
) -> Selection:
    """`exclude`: globs relative to the base ("vendor/**", or "vendor/" for the same); without a "/" a glob
    matches the file's name at any depth ("*.min.js"), as in .gitignore. A match is skipped as "excluded" (a
    directory whose every file would match is skipped whole). Patterns beyond the glob limits are refused,
    and a scan that takes longer than `deadline_s` stops with a ContextError, so a huge or hostile tree
    cannot hold the server."""
    if len(exclude) > MAX_EXCLUDES:
        raise ContextError(
            f"{len(exclude)} `exclude` patterns; the limit is {MAX_EXCLUDES}. Exclude whole directories "
            "('vendor/**', '**/node_modules/**') rather than files one by one, or filter the loaded dict in the REPL"
        )
    base = source.base
    matcher = compile_glob(source.pattern, "glob") if source.pattern else None
    # "vendor/" names a directory, as in .gitignore: everything below it. A leading "/" anchors at the base.
    patterns = [(p.strip("/") + "/**" if p.endswith("/") else p.lstrip("/"), "/" in p) for p in exclude]
    excluded = [(compile_glob(pattern, "exclude pattern"), by_path) for pattern, by_path in patterns]
    give_up = time.monotonic() + deadline_s
    rules = GitIgnore(base, roots)
    selection = Selection(base)
    top = str(base)
    for dirpath, dirnames, filenames in os.walk(top):
        _check_deadline(give_up, deadline_s, selection)
        rules.load(dirpath)
        prefix = "" if dirpath == top else dirpath[len(top) + 1 :].replace(os.sep, "/") + "/"
        kept_dirs = []
        for name in sorted(dirnames):
            path = os.path.join(dirpath, name)
            rel = prefix + name
            parts = rel.split("/")
            if name in ALWAYS_SKIPPED_DIRS or (matcher is not None and not matcher.may_match_below(parts)):
                continue
            if rules.ignored(path, is_dir=True):
                selection.skip("gitignored", rel + "/")
            elif os.path.islink(path):
                selection.skip("symlinked_dir", rel + "/")
            elif any(by_path and pattern.matches_all_below(parts) for pattern, by_path in excluded):
                selection.skip("excluded", rel + "/")
            else:
                kept_dirs.append(name)
        dirnames[:] = kept_dirs
        for name in sorted(filenames):
            _check_deadline(give_up, deadline_s, selection)
            rel = prefix + name
            if matcher is not None and not matcher.match(rel):
                continue
            if any(pattern.match(rel) if by_path else pattern.match_parts((name,)) for pattern, by_path in excluded):
                selection.skip("excluded", rel)
                continue
            path = os.path.join(dirpath, name)
            if rules.ignored(path, is_dir=False):
                selection.skip("gitignored", rel)
                continue
            _consider_file(selection, path, rel, roots, caps)
    for where in rules.dropped:
        selection.skip("gitignore_rules_dropped", where)
    return selection


def _check_deadline(give_up: float, deadline_s: float, selection: Selection) -> None:
    """Called per directory and per file: a clock read is cheap next to the stat that follows."""
    if time.monotonic() >= give_up:
        seen = len(selection.files) + sum(selection.skipped.values())
        raise ContextError(
            f"the tree under {selection.base} took too long to scan (over {deadline_s:g} s, {seen:,} entries "
            "seen), so the load was stopped. Narrow `path` (a subdirectory, or a glob such as 'src/**/*.py') or "
            "add `exclude` patterns for big directories ('**/node_modules/**')"
        )


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
