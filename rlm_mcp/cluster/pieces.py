"""What a Ray task runs next to the data: read one object of a remote source, then run the map on it.

Imported on the cluster's workers (rlm-mcp installed there) and in the Ray driver process (cluster/driver.py),
never in the server; it depends on the standard library, fsspec and stdlib-only parts of rlm-mcp.

The model's function never runs in the task's own process, which holds the cluster's credentials. The task
reads the object, writes it to a file, and starts a child Python (rlm_mcp/worker/mapchild.py) in a fresh
scratch directory, with an allow-listed environment (no credentials, no tokens). The child locks itself down
with the REPL worker's own code before it reads the text or runs anything of the model's: no network, no
processes, no reading other processes (the task's /proc/<pid>/environ included), no signals outside itself,
writes only in its scratch directory, memory, file-size and CPU limits; under RLM_MCP_SANDBOX=strict it runs
nothing where a layer is missing, otherwise its answer names the missing layers. When it ends, or at the
time limit, the task kills its whole process tree (and anything orphaned from it, which the task adopts as
a child subreaper) and removes the scratch directory: nothing it started outlives the task.

The child answers one line of JSON in a file; the task parses it into plain values (dicts, lists, strings,
numbers) and returns only those, so what Ray carries back was made by this module's code from plain data,
never by the model's. The Ray driver, in its own process without secrets, checks them again and hands the
server JSON; the server never unpickles anything a map produced.
"""

from __future__ import annotations

import bz2
import contextlib
import ctypes
import gzip
import json
import lzma
import os
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_mcp.host.proctree import descendants, kill_tree
from rlm_mcp.sandbox.policy import worker_environment

MAX_RESULT_CHARS = 100_000
MAX_PROMPT_CHARS = 2_000_000
MAX_ERROR_CHARS = 500
MAX_GAPS = 10
FUNCTION_TIMEOUT_S = 600
DECOMPRESS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
# -I: no PYTHON* variables, no user site-packages, no working directory on sys.path: nothing the model could
# have written is imported (and it can write only its scratch directory anyway).
CHILD = (
    "import sys; sys.path.insert(0, sys.argv[1]); sys.dont_write_bytecode = True; "
    "from rlm_mcp.worker.mapchild import main; sys.exit(main(sys.argv[1:]))"
)
PR_SET_CHILD_SUBREAPER = 36
SCRATCH_PREFIX = "rlm-map-"  # then the task process's pid, so a later task can tell a dead task's directory


class MapFailure(Exception):
    """One object's map failed; the message is the reason (a plain str, whatever the model's code raised)."""


def read_text(url: str, max_bytes: int) -> str:
    """One object's text, read by remote.read_object: only a URL in the spelling the server listed and
    checked, and over HTTP no redirect followed (the server checked this URL, not where it may lead)."""
    from rlm_mcp.contexts.remote import read_object
    from rlm_mcp.errors import UserError

    try:
        data = read_object(url, max_bytes)
    except UserError as exc:
        raise MapFailure(str(exc)) from None
    for suffix, decompress in DECOMPRESS.items():
        if url.endswith(suffix):
            data = decompress(data)
            break
    return data.decode("utf-8", "replace")


def run_function(url: str, code: str, name: str, max_bytes: int, limits: dict[str, Any]) -> dict[str, Any]:
    """The model's function on one object's text, in a locked-down child; its answer as plain data:
    {"value": <JSON value>, "gaps": [missing lockdown layers]}. `limits`: the server's sandbox mode,
    memory_bytes, write_bytes and timeout_s."""
    text = read_text(url, max_bytes)
    timeout = min(float(limits.get("timeout_s") or FUNCTION_TIMEOUT_S), FUNCTION_TIMEOUT_S)
    header = {
        "mode": limits.get("mode", "auto"),
        "memory_bytes": int(limits["memory_bytes"]),
        "write_bytes": int(limits["write_bytes"]),
        "cpu_s": timeout + 5,
        "code": code,
        "name": name,
        "path": url,
    }
    _sweep()
    private = tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-")  # 0700; the child writes only scratch/
    try:
        scratch = Path(private) / "scratch"
        (scratch / "home" / "tmp").mkdir(parents=True, mode=0o700)
        request = Path(private) / "request"
        request.write_bytes(json.dumps(header).encode() + b"\n" + text.encode("utf-8", "surrogatepass"))
        del text
        answer = _run_child(scratch, request, Path(private) / "answer", timeout, url)
    finally:
        _remove(private)
    return _parsed(answer, url)


def _run_child(scratch: Path, request: Path, answer: Path, timeout: float, url: str) -> bytes:
    """Start the child on the request, wait for it (at most `timeout`), then kill whatever is left of it."""
    with contextlib.suppress(OSError, AttributeError):  # orphans of the child come to us, to be killed
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    with open(request, "rb") as stdin, open(answer, "w+b") as stdout:
        child = subprocess.Popen(
            [sys.executable, "-I", "-c", CHILD, PACKAGE_PARENT], stdin=stdin, stdout=stdout,
            stderr=subprocess.DEVNULL, cwd=scratch, env=worker_environment(scratch / "home", os.environ),
            start_new_session=True, close_fds=True,
        )  # fmt: skip
        try:
            finished = _wait_exit(child.pid, timeout)
        finally:
            _end_tree(child)
        if not finished:
            raise MapFailure(f"the function ran over {timeout:g} s on {url}")
        stdout.seek(0)
        return stdout.read(MAX_RESULT_CHARS + 64 * 1024)


def _wait_exit(pid: int, timeout: float) -> bool:
    """Whether the child exited within `timeout`; it is not reaped, so its pid stays ours to kill by."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):
        handle = -1
    if handle >= 0:
        try:
            return bool(select.select([handle], [], [], timeout)[0])
        finally:
            os.close(handle)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.05)
    return False


def _end_tree(child: subprocess.Popen[bytes]) -> None:
    """Kill the child's tree, then anything of it that was orphaned to us (every descendant of this process
    in another session: the child started a session of its own), and reap them all."""
    kill_tree(child.pid)
    child.wait()
    own_session = os.getsid(0)
    for _ in range(3):
        strays = [pid for pid in descendants(os.getpid()) if _session_of(pid) not in (own_session, None)]
        if not strays:
            break
        for pid in strays:
            kill_tree(pid)
        for pid in strays:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, 0)


def _session_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat_line = handle.read()
    except OSError:
        return None
    return int(stat_line[stat_line.rfind(b")") + 2 :].split()[3])


def _sweep() -> None:
    """Remove what tasks that were killed (their Ray worker ended with its job) left in the temp directory:
    a directory of ours whose task process is gone."""
    temp = tempfile.gettempdir()
    with contextlib.suppress(OSError):
        for entry in os.scandir(temp):
            owner = entry.name[len(SCRATCH_PREFIX) :].partition("-")[0]
            if not (entry.name.startswith(SCRATCH_PREFIX) and owner.isdigit()) or int(owner) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if entry.stat(follow_symlinks=False).st_uid != os.geteuid() or not entry.is_dir(follow_symlinks=False):
                    continue
                try:
                    os.kill(int(owner), 0)
                    continue  # its task process lives (or the pid was reused: the directory waits)
                except ProcessLookupError:
                    _remove(entry.path)


def _remove(path: str) -> None:
    """Remove the task's directory, whatever modes the child left on what it made there."""

    def writable(function: Any, name: str, _: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(name), stat.S_IRWXU)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, stat.S_IRWXU)
            function(name)

    shutil.rmtree(path, onerror=writable)
    if os.path.exists(path):
        shutil.rmtree(path, ignore_errors=True)


def _parsed(answer: bytes, url: str) -> dict[str, Any]:
    """The child's one line of JSON, checked as untrusted: a value (or an error), and the gaps."""
    if len(answer) > MAX_RESULT_CHARS + 16 * 1024:
        raise MapFailure(f"the result for {url} is over {MAX_RESULT_CHARS:,} characters as JSON; return less")
    try:
        parsed = json.loads(answer)
    except (ValueError, RecursionError):
        raise MapFailure(f"the function's process answered no result for {url} (it exited, or was killed)") from None
    if not isinstance(parsed, dict):
        raise MapFailure(f"the function's process answered no result for {url}")
    gaps = parsed.get("gaps")
    gaps = [str(gap)[:MAX_ERROR_CHARS] for gap in gaps[:MAX_GAPS]] if isinstance(gaps, list) else []
    if "error" in parsed:
        raise MapFailure(str(parsed["error"])[:MAX_ERROR_CHARS])
    if "value" not in parsed:
        raise MapFailure(f"the function's process answered no value for {url}")
    if len(json.dumps(parsed["value"])) > MAX_RESULT_CHARS:
        raise MapFailure(f"the result for {url} is over {MAX_RESULT_CHARS:,} characters as JSON; return less")
    return {"value": parsed["value"], "gaps": gaps}


def make_prompt(url: str, template: str, max_bytes: int) -> dict[str, Any]:
    """The template filled with the object's text ({text}) and its URL ({path}). No model code runs here."""
    prompt = template.replace("{path}", url).replace("{text}", read_text(url, max_bytes))
    if len(prompt) > MAX_PROMPT_CHARS:
        raise MapFailure(f"the prompt for {url} is {len(prompt):,} characters, over {MAX_PROMPT_CHARS:,}")
    return {"prompt": prompt}
