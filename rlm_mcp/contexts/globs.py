"""Glob matching whose cost is bounded, for patterns that come from an untrusted model or an untrusted tree.

One regex for a whole glob (what this replaced) backtracks exponentially: `**/` becomes `(?:.*/)?`, and ten
of them in a row froze the server for 17 s (Python's `re` holds the GIL, so a thread does not help). Here a
glob is split on "/" and matched a segment at a time: each segment by a single-segment regex from
`fnmatch.translate` (it never crosses "/" and, since 3.9, matches in near-linear time), and `**` by a walk
over the set of pattern positions reached so far, so a match costs at most (pattern segments) x (path
segments) segment tests. Repeated `**` segments are collapsed to one, and patterns beyond the limits below
are refused with a message that says what to do instead.

Semantics: `*`, `?` and `[...]` / `[!...]` match within one segment; a `**` segment spans zero or more
directories (`src/**/*.py` matches `src/a.py`); a trailing `**` matches everything below, but not the
directory itself (`src/**` matches `src/a/b.txt`, not `src`). A `**` inside a segment (`a**b`) is a plain `*`,
as in git. A backslash is a literal character (callers that want escapes, like .gitignore, rewrite them).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from functools import lru_cache

from rlm_mcp.errors import ContextError

MAX_PATTERN_CHARS = 1_000
MAX_PATTERN_SEGMENTS = 64  # after collapsing repeated `**`
MAX_PATTERN_WILDCARDS = 256  # `*`, `?` and `[` characters, after collapsing repeated `**`
WILDCARD_CHARS = frozenset("*?[")

Segment = str | re.Pattern[str] | None  # a literal name, a single-segment regex, or None for `**`
_ANY_NAME = re.compile(fnmatch.translate("*"))


class Glob:
    """A compiled glob. `steps` counts the segment tests made so far (a deterministic cost, for tests)."""

    __slots__ = ("_deep", "_ends_deep", "_reach", "_tests", "pattern", "steps")

    def __init__(self, pattern: str, segments: Sequence[Segment]) -> None:
        self.pattern = pattern
        self._ends_deep = bool(segments) and segments[-1] is None
        if self._ends_deep:  # a trailing `**` needs at least one more segment: "any name", then zero or more
            segments = [*segments[:-1], _ANY_NAME, None]
        self._deep = None in segments
        # Per segment, the test of one path part (None for `**`); bound methods, since this is the hot loop.
        self._tests: tuple[Callable[[str], object] | None, ...] = tuple(
            None if segment is None else segment.__eq__ if isinstance(segment, str) else segment.match
            for segment in segments
        )
        # Per position, the positions it stands for: a `**` may also take no part, so it reaches the next one
        # too (repeats were collapsed, so one step is all there is).
        end = len(segments)
        self._reach = tuple(
            frozenset({index, index + 1}) if index < end and segments[index] is None else frozenset({index})
            for index in range(end + 1)
        )
        self.steps = 0

    def match(self, path: str) -> bool:
        """Whether the whole of `path` ("a/b/c.txt", no leading or trailing "/") matches."""
        return self.match_parts(path.split("/"))

    def match_parts(self, parts: Sequence[str]) -> bool:
        if self._deep:
            return len(self._tests) in self._states(parts)
        if len(parts) != len(self._tests):  # the common case: one segment per part, no sets needed
            return False
        for test, part in zip(self._tests, parts, strict=True):
            self.steps += 1
            if not test(part):  # type: ignore[misc]  # only `**` has no test, and it is not here
                return False
        return True

    def may_match_below(self, directory: Sequence[str]) -> bool:
        """Whether some path under `directory` (its parts) could match; if not, a walk can skip it."""
        return any(index < len(self._tests) for index in self._states(directory))

    def matches_all_below(self, directory: Sequence[str]) -> bool:
        """Whether every path under `directory` matches (the glob ends in `**` and the directory reaches it),
        so an exclude can skip the directory whole instead of walking it."""
        if not self._ends_deep:
            return False
        states = self._states(directory)
        return len(self._tests) - 2 in states or len(self._tests) - 1 in states

    def _states(self, parts: Sequence[str]) -> frozenset[int] | set[int]:
        """The pattern positions reachable after `parts`: each part is tested once per position, so the
        cost is at most len(pattern segments) x len(parts) segment tests, whatever the pattern."""
        tests, reach, end = self._tests, self._reach, len(self._tests)
        states: frozenset[int] | set[int] = reach[0]
        steps = 0
        for part in parts:
            following: set[int] = set()
            for index in states:
                if index == end:
                    continue
                steps += 1
                test = tests[index]
                if test is None:
                    following |= reach[index]  # `**` takes this part and may take more
                elif test(part):
                    following |= reach[index + 1]
            states = following
            if not states:
                break
        self.steps += steps
        return states


def split_glob(pattern: str) -> list[str]:
    """The "/"-separated segments of `pattern`, with runs of `**` segments collapsed to one."""
    segments: list[str] = []
    for segment in pattern.split("/"):
        if not (segment == "**" and segments and segments[-1] == "**"):
            segments.append(segment)
    return segments


def check_glob(pattern: str, what: str = "glob") -> list[str]:
    """Refuse a pattern beyond the limits (with what to do instead); return its collapsed segments."""
    shown = pattern if len(pattern) <= 60 else pattern[:57] + "..."
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ContextError(
            f"the {what} {shown!r} is {len(pattern):,} characters long; the limit is {MAX_PATTERN_CHARS:,}. "
            "Use a shorter glob (a directory and '**/*.ext' is usually enough) and filter the loaded dict in the REPL"
        )
    segments = split_glob(pattern)
    if len(segments) > MAX_PATTERN_SEGMENTS:
        raise ContextError(
            f"the {what} {shown!r} has {len(segments)} '/'-separated parts; the limit is {MAX_PATTERN_SEGMENTS}. "
            "Put the fixed directories in the path before the first wildcard, and let one '**/' span the rest"
        )
    wildcards = sum(char in WILDCARD_CHARS for segment in segments for char in segment)
    if wildcards > MAX_PATTERN_WILDCARDS:
        raise ContextError(
            f"the {what} {shown!r} has {wildcards} wildcards (*, ?, [); the limit is {MAX_PATTERN_WILDCARDS}. "
            "Use fewer (one '**/' spans any number of directories) and filter the loaded dict in the REPL"
        )
    return segments


@lru_cache(maxsize=1024)
def compile_glob(pattern: str, what: str = "glob") -> Glob:
    """A checked, compiled glob; `what` names it in the error ("exclude pattern")."""
    compiled: list[Segment] = []
    for segment in check_glob(pattern, what):
        if segment == "**":
            compiled.append(None)
        elif any(char in WILDCARD_CHARS for char in segment):
            compiled.append(re.compile(fnmatch.translate(segment)))
        else:
            compiled.append(segment)
    return Glob(pattern, compiled)
