"""What a Ray task runs next to the data: read one object of a remote source, then run the map on it.

Imported on the cluster's workers (rlm-mcp installed there) and in the Ray driver process (cluster/driver.py),
never in the server; it depends on the standard library, fsspec and stdlib-only parts of rlm-mcp.

The model's function never runs in the task's own process, which holds the cluster's credentials. The task
reads the object, writes it to a file, and starts a child Python (rlm_mcp/worker/mapchild.py) in a fresh
scratch directory, with an allow-listed environment (no credentials, no tokens). The child locks itself down
with the REPL worker's own code before it reads the text or runs anything of the model's: no network, no
processes, no reading other processes (the task's /proc/<pid>/environ included), no signals outside itself,
writes only in its scratch directory, memory, file-size and CPU limits; under RLM_MCP_SANDBOX=strict it runs
nothing where a layer is missing, otherwise its report names the missing layers. When it ends, or at the
time limit, the task kills its whole process tree (and anything orphaned from it, which the task adopts as
a child subreaper) and removes the scratch directory: nothing it started outlives the task.

The child reports the layers it could not apply on a pipe of its own, closed before any of the model's
code runs (so the function cannot forge them), and answers one line of JSON in a file; the task parses
them into plain values (dicts, lists, strings, numbers) and returns only those, so what Ray carries back
was made by this module's code from plain data, never by the model's. The Ray driver, in its own process
without secrets, checks them again and hands the server JSON; the server never unpickles anything a map
produced.
"""

from __future__ import annotations

import bz2
import contextlib
import ctypes
import gzip
import json
import lzma
import os
import re
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rlm_mcp.errors import MapFailure
from rlm_mcp.host.proctree import descendants, kill_tree
from rlm_mcp.sandbox.policy import worker_environment

MAX_RESULT_CHARS = 100_000
MAX_PROMPT_CHARS = 2_000_000
MAX_ERROR_CHARS = 500
MAX_GAPS = 10
MAX_REPORT_BYTES = 64 * 1024  # the child's sandbox report: the layers it could not apply
NOTE = re.compile(r"not JSON \([^\n]{1,80}\): kept as its repr")  # the one note the child writes
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


def left_out(kind: str, budget: int) -> str:
    """What an object says whose result came past its map's budget (the bytes of result frames kept, which
    the driver and the server count alike)."""
    if kind == "llm":
        return f"left out: the map's prompts passed {budget:,} bytes in all; map fewer or smaller objects"
    return f"left out: the map's results passed {budget:,} bytes in all; return less per object"


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
    {"value": <JSON value>, "gaps": [missing lockdown layers], "note": why the value is a repr (if it is)}.
    `limits`: the server's sandbox mode, memory_bytes, write_bytes and timeout_s."""
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
        report, answer = _run_child(scratch, request, Path(private) / "answer", timeout, url)
    finally:
        _remove(private)
    return _parsed(answer, url, _gaps(report, url))


def _run_child(scratch: Path, request: Path, answer: Path, timeout: float, url: str) -> tuple[bytes, bytes]:
    """Start the child on the request, wait for it (at most `timeout`), then kill whatever is left of it:
    (its sandbox report, its answer). The report comes on a pipe of its own, written and closed by the child
    before any of the model's code runs, and only its first line is read: the function can write its own
    answer (its value is its own), never the gaps of the node's lockdown."""
    with contextlib.suppress(OSError, AttributeError):  # orphans of the child come to us, to be killed
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    deadline = time.monotonic() + timeout
    reports, child_end = os.pipe()
    with open(request, "rb") as stdin, open(answer, "w+b") as stdout:
        try:
            child = subprocess.Popen(
                [sys.executable, "-I", "-c", CHILD, PACKAGE_PARENT, str(child_end)], stdin=stdin, stdout=stdout,
                stderr=subprocess.DEVNULL, cwd=scratch, env=worker_environment(scratch / "home", os.environ),
                start_new_session=True, close_fds=True, pass_fds=(child_end,),
            )  # fmt: skip
        except BaseException:
            os.close(reports)
            raise
        finally:
            os.close(child_end)
        try:
            try:
                report = _first_line(reports, deadline)
            finally:
                os.close(reports)
            finished = report is not None and _wait_exit(child.pid, max(deadline - time.monotonic(), 0.0))
        finally:
            _end_tree(child)
        if not finished:
            raise MapFailure(f"the function ran over {timeout:g} s on {url}")
        stdout.seek(0)
        return report or b"", stdout.read(MAX_RESULT_CHARS + 64 * 1024)


def _first_line(descriptor: int, deadline: float) -> bytes | None:
    """The first line read from `descriptor` (what came before its end, if it ended first); None at the
    deadline. Whatever follows the line is never read."""
    data = bytearray()
    while b"\n" not in data and len(data) <= MAX_REPORT_BYTES:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([descriptor], [], [], left)[0]:
            return None
        chunk = os.read(descriptor, MAX_REPORT_BYTES)
        if not chunk:
            break
        data += chunk
    return bytes(data.partition(b"\n")[0])


def _gaps(report: bytes, url: str) -> list[str]:
    """The lockdown layers the child could not apply, from its report (or the reason it ran nothing)."""
    try:
        parsed = json.loads(report)
    except (ValueError, RecursionError):
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        raise MapFailure(parsed["error"][:MAX_ERROR_CHARS])
    gaps = parsed.get("gaps") if isinstance(parsed, dict) else None
    if not isinstance(gaps, list):
        raise MapFailure(f"the function's process ended before it locked itself down, for {url}")
    return [str(gap)[:MAX_ERROR_CHARS] for gap in gaps[:MAX_GAPS]]


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


def _parsed(answer: bytes, url: str, gaps: list[str]) -> dict[str, Any]:
    """The child's one line of JSON, checked as untrusted: a value (or an error), with the gaps its report
    gave. The function may have written this line itself: nothing but its value (or error) is taken, and a
    note only as the child writes it."""
    if len(answer) > MAX_RESULT_CHARS + 16 * 1024:
        raise MapFailure(f"the result for {url} is over {MAX_RESULT_CHARS:,} characters as JSON; return less")
    try:
        parsed = json.loads(answer)
    except (ValueError, RecursionError):
        raise MapFailure(f"the function's process answered no result for {url} (it exited, or was killed)") from None
    if not isinstance(parsed, dict):
        raise MapFailure(f"the function's process answered no result for {url}")
    if "error" in parsed:
        raise MapFailure(str(parsed["error"])[:MAX_ERROR_CHARS])
    if "value" not in parsed:
        raise MapFailure(f"the function's process answered no value for {url}")
    if len(json.dumps(parsed["value"])) > MAX_RESULT_CHARS:
        raise MapFailure(f"the result for {url} is over {MAX_RESULT_CHARS:,} characters as JSON; return less")
    answer = {"value": parsed["value"], "gaps": gaps}
    if isinstance(parsed.get("note"), str) and NOTE.fullmatch(parsed["note"]):  # the value is its repr: said so
        answer["note"] = parsed["note"][:MAX_ERROR_CHARS]
    return answer


def make_prompt(url: str, template: str, max_bytes: int) -> dict[str, Any]:
    """The template filled with the object's text ({text}) and its URL ({path}). No model code runs here."""
    prompt = template.replace("{path}", url).replace("{text}", read_text(url, max_bytes))
    if len(prompt) > MAX_PROMPT_CHARS:
        raise MapFailure(f"the prompt for {url} is {len(prompt):,} characters, over {MAX_PROMPT_CHARS:,}")
    return {"prompt": prompt}
