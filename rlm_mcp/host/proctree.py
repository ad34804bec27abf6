"""Finding and killing every process a worker started, including those that left its process group.

Killing the worker's process group misses a child that called setsid() and then forked (its grandchild
is in another session and, once orphaned, would be adopted by init and live on). The worker makes itself
a child subreaper, so such orphans are re-parented to it instead; the whole tree is then reachable by
parent links in /proc. The tree is frozen with SIGSTOP before the SIGKILLs, so nothing forks in between.
With the seccomp layer active the worker cannot fork at all and the tree is the worker alone.
"""

from __future__ import annotations

import os
import signal


def _parents() -> dict[int, int]:
    """pid -> parent pid, for every process we can see."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue  # gone already
        # The command name may contain spaces and parentheses: the fields start after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        parents[int(entry)] = int(fields[1])
    return parents


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def kill_tree(root: int) -> None:
    """SIGKILL `root`, its process group and every descendant, frozen first so none can escape."""
    if not os.path.isdir("/proc"):
        tree: set[int] = set()
    else:
        _signal(root, signal.SIGSTOP)
        tree = set()
        while True:
            new = descendants(root) - tree
            if not new:
                break
            for pid in new:
                _signal(pid, signal.SIGSTOP)
            tree |= new
    try:
        os.killpg(root, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in (root, *tree):
        _signal(pid, signal.SIGKILL)
