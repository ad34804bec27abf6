"""The REPL worker: runs in its own process, one per session, and executes the root model's code.

It talks to the host over the protocol pipe only (frames in, frames out, one reply per request) and knows
nothing of MCP. It imports only the standard library and the worker side (tests/test_boundary.py), so
that it starts fast and so that what runs next to untrusted code is easy to audit.

Started by the host as `python -I -c BOOTSTRAP rlm-mcp-worker PACKAGE_PARENT STDOUT_FD STDERR_FD` (see
host/worker_host.py), with the protocol on its stdin
and stdout; it moves the protocol to private descriptors at once, points fds 0, 1 and 2 elsewhere, and
locks itself down (worker/lockdown/) before it reads the first request.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import errno
import faulthandler
import linecache
import os
import re
import signal
import sys
import threading
import time
import traceback
from typing import Any

from rlm_mcp.bridge import frames, ops
from rlm_mcp.sandbox.policy import SandboxPolicy
from rlm_mcp.sandbox.prctl import make_undumpable
from rlm_mcp.units import MiB
from rlm_mcp.worker import lockdown
from rlm_mcp.worker.capture import OutputCapture
from rlm_mcp.worker.channel import HostChannel, make_llm_functions
from rlm_mcp.worker.cluster import make_cluster_functions
from rlm_mcp.worker.errors import FormatError, LLMError
from rlm_mcp.worker.formats import load_file
from rlm_mcp.worker.helpers import HELPERS
from rlm_mcp.worker.lockdown.limits import set_cpu_backstop
from rlm_mcp.worker.mapped import MappedText
from rlm_mcp.worker.memory import make_memory_functions
from rlm_mcp.worker.reader import count_lines, read_file_set
from rlm_mcp.worker.shaping import elide
from rlm_mcp.worker.snapshot import Snapshotter
from rlm_mcp.worker.variables import bounded_repr, changed_names, describe, fingerprint

TRACEBACK_LIMIT_CHARS = 8_000
PREVIEW_CHARS = 200  # the preview is most of a load result: enough to see the format
KEEP_ELIDED_OUTPUTS = 5
MAX_CHANGED_LISTED = 40
CELL_PREFIX = "<cell "


# size: the worker's dispatcher and cell runner; next: context loading apart
class Repl:
    def __init__(
        self, capture: OutputCapture, channel: HostChannel | None = None, policy: SandboxPolicy | None = None
    ) -> None:
        self.capture = capture
        self.policy = policy  # None: no sandbox
        self.snapshots: Snapshotter | None = None
        self.namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
        # Names the REPL provides (loaded contexts, helpers): restored after any cell that rebinds them.
        self.provided: dict[str, Any] = {}
        if channel:
            self.provided.update(make_llm_functions(channel), **make_memory_functions(channel, self.loaded_contexts))
            self.provided.update(make_cluster_functions(channel, LLMError))
        self.channel = channel
        self.context_names: list[str] = []  # loaded contexts, in load order
        self.provided.update(HELPERS, contexts=self.list_contexts, unload=self.unload_context, show_vars=self.show_vars)
        self.namespace.update(self.provided)
        self.executing = False
        self.namespace["_outs"] = {}
        self.namespace["_errs"] = {}

    # -- requests ---------------------------------------------------------------------------------

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        handlers = {
            ops.EXEC: self.exec_cell,
            ops.EVAL_TEXT: self.eval_text,
            ops.LOAD: self.load,
            ops.UNLOAD: self.unload,
            ops.PERSIST: self.persist,
            ops.VARIABLES: self.variables,
            ops.RESTORE: self.restore,
        }
        handler = handlers.get(str(op))
        if handler is None:
            return {"ok": False, "error": f"unknown op {op!r}"}
        try:
            return handler(request)
        except Exception as exc:  # a bug in the worker, not in user code: report it, keep serving
            return {"ok": False, "error": f"worker error in {op}: {type(exc).__name__}: {exc}"}

    def _own_names(self) -> list[str]:
        """The public names code defined (contexts and helpers left out), sorted."""
        return sorted(
            name
            for name, value in self.namespace.items()
            if not name.startswith("_") and self.provided.get(name, _MISSING) is not value and name != "__builtins__"
        )

    def variables(self, request: dict[str, Any]) -> dict[str, Any]:
        """The public names code defined, with type, size and a short preview (contexts and helpers left out)."""
        return {"ok": True, "variables": [describe(name, self.namespace[name]) for name in self._own_names()[:500]]}

    def show_vars(self) -> dict[str, str]:
        """Your variables (not the loaded contexts or helpers): name -> type and size."""
        shown = {}
        for name in self._own_names():
            info = describe(name, self.namespace[name], preview_chars=0)
            shown[name] = info["type"] if info["size"] is None else f"{info['type']}, {info['size']:,}"
        return shown

    def persist(self, request: dict[str, Any]) -> dict[str, Any]:
        """From now on, snapshot the variables after each successful cell (see repl/snapshot.py)."""
        self.snapshots = Snapshotter(str(request["dir"]), int(request["max_bytes"]))
        return {"ok": True}

    def restore(self, request: dict[str, Any]) -> dict[str, Any]:
        if self.snapshots is None:
            return {"ok": False, "error": "persist was not configured"}
        return {"ok": True, **self.snapshots.restore(self.namespace, dict(request["digests"]))}

    def eval_text(self, request: dict[str, Any]) -> dict[str, Any]:
        """Evaluate an expression (e.g. `chunks[3]`) to text, for sub_query's `context` argument."""
        try:
            code = compile(str(request["expr"]), "<context expression>", "eval")
            self.executing = True
            try:
                value = eval(code, self.namespace)
            finally:
                self.executing = False
        except BaseException as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        text = value if isinstance(value, str) else str(value)
        return {"ok": True, "text": text}

    # -- running cells ----------------------------------------------------------------------------

    def exec_cell(self, request: dict[str, Any]) -> dict[str, Any]:
        code = str(request["code"])
        cell = int(request.get("cell", 0))
        limit = int(request.get("output_limit", ops.DEFAULT_OUTPUT_CHARS))
        filename = f"{CELL_PREFIX}{cell}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)

        before = fingerprint(self.namespace)
        self.capture.begin()
        value: Any = None
        error: str | None = None
        error_type: str | None = None
        if self.policy is not None:
            set_cpu_backstop(self.policy.cell_cpu_s)
        try:
            body, last = self._compile(code, filename)
            self.executing = True
            try:
                exec(body, self.namespace)
                if last is not None:
                    value = eval(last, self.namespace)
            finally:
                self.executing = False
        except BaseException as exc:  # SystemExit and KeyboardInterrupt end the cell, not the REPL
            error_type = type(exc).__name__
            error = elide(self._format_error(exc) + self._sandbox_hint(exc), TRACEBACK_LIMIT_CHARS)
        self.capture.finish()

        result_repr = None
        if value is not None:
            self.namespace["_"] = value
            result_repr = elide(bounded_repr(value, limit), limit, "`_` (the last expression's value)")

        stdout = self.capture.stdout.read()
        stderr = self.capture.stderr.read()
        self.namespace["_out"] = stdout.text
        self.namespace["_err"] = stderr.text
        shown_out = self._shape(stdout.text, stdout.chars, limit, "_outs", cell)
        shown_err = self._shape(stderr.text, stderr.chars, limit, "_errs", cell)

        deleted = [name for name in self.context_names if name not in self.namespace]  # `del t` frees nothing
        restored = self._restore_provided()
        after = fingerprint(self.namespace)
        names = changed_names(before, after)
        changed = [describe(name, self.namespace[name]) for name in names[:MAX_CHANGED_LISTED]]
        snapshot = None
        if self.snapshots is not None and error is None:
            started_snapshot = time.perf_counter()
            snapshot = self.snapshots.save(self.namespace, self.provided, set(names))
            snapshot["elapsed_s"] = time.perf_counter() - started_snapshot
        return {
            "snapshot": snapshot,
            "threads": [thread.name for thread in threading.enumerate() if thread is not threading.main_thread()],
            "ok": True,
            "stdout": shown_out,
            "stdout_chars": stdout.chars,
            "stderr": shown_err,
            "stderr_chars": stderr.chars,
            "result": result_repr,
            "error": error,
            "error_type": error_type,
            "changed": changed,
            "changed_total": len(names),
            "restored": restored,
            "deleted_contexts": deleted,
        }

    @staticmethod
    def _compile(code: str, filename: str) -> tuple[Any, Any]:
        """Compile a cell; a final expression is compiled apart so its value can be shown, as in IPython."""
        tree = ast.parse(code, filename, "exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last_expr = tree.body.pop()
            last = compile(ast.Expression(last_expr.value), filename, "eval")
        return compile(tree, filename, "exec"), last

    def _shape(self, text: str, chars: int, limit: int, store: str, cell: int) -> str:
        if chars <= limit:
            return text
        kept = self.namespace.setdefault(store, {})
        if isinstance(kept, dict):
            kept[cell] = text
            for old in sorted(kept)[:-KEEP_ELIDED_OUTPUTS]:
                del kept[old]
        return elide(text, limit, f"{store}[{cell}] (slice it to read on)")

    def _format_error(self, exc: BaseException) -> str:
        """The traceback from the user's cell down: the worker's own frames are noise to the model."""
        if isinstance(exc, SyntaxError):
            return "".join(traceback.format_exception_only(type(exc), exc))
        tb = exc.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith(CELL_PREFIX):
            tb = tb.tb_next
        report = traceback.TracebackException(type(exc), exc, tb)
        _drop_own_frames(report)
        text = _OWN_TYPE.sub("", "".join(report.format()))
        suggestion = _near_name(exc, tb, set(self._own_names()))
        if suggestion and "Did you mean" not in text:  # Python 3.12+ says it itself
            text = text.rstrip("\n") + f". Did you mean: {suggestion!r}?\n"
        return text

    def _sandbox_hint(self, exc: BaseException) -> str:
        """Why the kernel said no, when it was the sandbox: a bare errno does not tell the model."""
        if self.policy is None:
            return ""
        if isinstance(exc, MemoryError):
            return (
                f"rlm-mcp sandbox: the worker's memory is capped at {self.policy.memory_bytes // MiB:,} MiB "
                "(RLM_MCP_MEMORY_LIMIT_MB); work in chunks\n"
            )
        if isinstance(exc, OSError) and exc.errno == errno.EFBIG:
            return (
                f"rlm-mcp sandbox: files are capped at {self.policy.write_bytes // MiB:,} MiB "
                f"({self.policy.write_setting})\n"
            )
        if isinstance(exc, OSError) and exc.errno == errno.ENOMEM and "rlm-mcp sandbox" not in str(exc):
            return (
                f"rlm-mcp sandbox: the worker's memory is capped at {self.policy.memory_bytes // MiB:,} MiB "
                "(RLM_MCP_MEMORY_LIMIT_MB), and shared anonymous memory (mmap.mmap(-1, n) without "
                "flags=mmap.MAP_PRIVATE, memfd_create, SysV shm) is disabled because it escapes the cap; use a "
                "bytearray, mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE), or mmap a file in the working directory\n"
            )
        refused = isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
        if refused and "rlm-mcp sandbox" not in str(exc):
            return (
                "rlm-mcp sandbox: writes are allowed only under this session's directory (the working "
                "directory), reads only there, under the roots and in the Python installation; "
                "no processes, no network\n"
            )
        return ""

    def _restore_provided(self) -> list[str]:
        restored = []
        for name, value in self.provided.items():
            if self.namespace.get(name, _MISSING) is not value:
                self.namespace[name] = value
                restored.append(name)
        return restored

    def interrupt(self, signum: int, frame: Any) -> None:
        """SIGINT interrupts user code only; between cells it is ignored, so a late signal is harmless."""
        if self.executing:
            raise KeyboardInterrupt

    # -- contexts ---------------------------------------------------------------------------------

    def load(self, request: dict[str, Any]) -> dict[str, Any]:
        name = str(request["name"])
        kind = request["kind"]
        stats: dict[str, Any] = {}
        value: Any
        if kind == "text":
            value = str(request["text"])
            stats.update(kind="str", files=None, replaced_chars=0, chars=len(value), lines=count_lines(value))
        elif kind == "file":
            try:
                loaded = load_file(
                    str(request["path"]),
                    size=int(request["size"]),
                    mmap_bytes=int(request["mmap_bytes"]),
                    max_bytes=int(request["max_bytes"]),
                )
            except FormatError as exc:
                return {"ok": False, "error": str(exc)}
            value = loaded.value
            stats.update(
                kind=loaded.kind,
                files=None,
                bytes=loaded.bytes,
                replaced_chars=loaded.replaced,
                chars=loaded.chars,
                lines=loaded.lines,
                notes=loaded.notes,
            )
        elif kind == "files":
            file_set = read_file_set(
                request["root"], list(request["files"]), int(request["max_file_bytes"]), int(request["max_total_bytes"])
            )
            value = file_set.files
            texts = list(value.values())
            stats.update(
                kind="files",
                files=len(file_set.files),
                replaced_chars=file_set.replaced,
                binary=file_set.binary,
                unreadable=file_set.unreadable,
                too_large=file_set.too_large,
                with_replacements=file_set.with_replacements[:20],
                chars=sum(len(text) for text in texts),
                lines=sum(count_lines(text) for text in texts),
            )
        elif kind == "value":  # a child RLM's context: a dict or list its parent passed
            value = request["value"]
            texts = list(value.values()) if isinstance(value, dict) else list(value)
            stats.update(
                kind="json",
                files=len(value) if isinstance(value, dict) else None,
                replaced_chars=0,
                chars=sum(len(text) for text in texts if isinstance(text, str)),
                lines=sum(count_lines(text) for text in texts if isinstance(text, str)),
            )
        else:
            return {"ok": False, "error": f"unknown context kind {kind!r}"}

        self.namespace[name] = value
        self.provided[name] = value
        if name in self.context_names:
            self.context_names.remove(name)
        self.context_names.append(name)
        stats["preview"] = _preview(value)
        return {"ok": True, **stats}

    def list_contexts(self) -> dict[str, str]:
        """The loaded contexts: name -> type and size. unload(name) frees one."""
        values = {name: self.provided[name] for name in self.context_names}
        return {name: f"{type(value).__name__}, {_size(value)}" for name, value in values.items()}

    def loaded_contexts(self) -> dict[str, Any]:
        """The loaded contexts, name -> value (remember() and recall() take the value for its name)."""
        return {name: self.provided.get(name) for name in self.context_names}

    def unload_context(self, name: str) -> str:
        """Free a loaded context (it is not reloaded after a restart); other references to it keep it alive."""
        if name not in self.context_names:
            raise KeyError(f"no context named {name!r}; loaded: {', '.join(self.context_names) or 'none'}")
        freed = self.channel.request({"op": ops.FORGET, "name": name}).get("freed") if self.channel else None
        self.unload({"name": name})
        fetched = f"; freed {freed:,} bytes of fetched data" if isinstance(freed, int) and freed > 0 else ""
        return f"unloaded {name!r}{fetched}"

    def unload(self, request: dict[str, Any]) -> dict[str, Any]:
        name = str(request["name"])
        value = self.provided.pop(name, None)
        self.namespace.pop(name, None)
        if name in self.context_names:
            self.context_names.remove(name)
        if isinstance(value, MappedText):
            value.close()
        return {"ok": True}


_MISSING = object()
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# An exception class of the REPL's own (MapError, LLMError, MemoryUnavailableError) is shown by its name: its
# module path says nothing the model can use. Only at a line's start, where the traceback names the type.
_OWN_TYPE = re.compile(r"(?m)^rlm_mcp(?:\.\w+)+\.(?=\w+(?::|$))")


def _drop_own_frames(report: traceback.TracebackException) -> None:
    """Drop the REPL's own frames (its helpers, rlm_map, remember, the interrupt handler above a
    KeyboardInterrupt, the sandbox's audit hook above a refused call) from a traceback and the exceptions
    chained to it: the model cannot change that code, and its message says what went wrong."""
    seen: set[int] = set()
    pending: list[traceback.TracebackException | None] = [report]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        kept = [frame for frame in current.stack if not os.path.abspath(frame.filename or "").startswith(PACKAGE_DIR)]
        current.stack = traceback.StackSummary.from_list(kept)
        pending += [current.__cause__, current.__context__]


def _near_name(exc: BaseException, tb: Any, own: set[str]) -> str | None:
    """The name a NameError or AttributeError was probably after, as Python's own REPL suggests it (its
    traceback module does so only from 3.12; the cell's model needs it as much). Names the code defined
    itself (`own`) come first: a typo is more often of one's own variable than of a helper's name."""
    name = getattr(exc, "name", None)
    if not isinstance(name, str):
        return None
    if isinstance(exc, NameError):
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if tb is None:
            return None
        frame = tb.tb_frame
        candidates = [*frame.f_locals, *frame.f_globals, *dir(builtins)]
    elif isinstance(exc, AttributeError):
        try:
            candidates = dir(exc.obj)
        except Exception:
            return None
    else:
        return None
    candidates = [candidate for candidate in candidates[:5_000] if candidate != name]
    for pool in ([candidate for candidate in candidates if candidate in own], candidates):
        found = difflib.get_close_matches(name, pool, n=1, cutoff=0.7)
        if found:
            return found[0]
    return None


def _size(value: Any) -> str:
    if isinstance(value, dict):
        return f"{len(value):,} files"
    if isinstance(value, list):
        return f"{len(value):,} items"
    return f"{len(value):,} chars"


def _preview(value: Any) -> str:
    """The start of a loaded value, whatever its shape; bounded, never a full repr."""
    if isinstance(value, dict):
        listing = ", ".join(list(value)[:8])
        return f"{len(value):,} files: {listing}" + (", ..." if len(value) > 8 else "")
    if isinstance(value, list):
        return f"{len(value):,} items; first: " + bounded_repr(value[0], PREVIEW_CHARS) if value else "empty list"
    if isinstance(value, (str, MappedText)):
        return value[:PREVIEW_CHARS]
    return bounded_repr(value, PREVIEW_CHARS)


def _take_over_descriptors(stdout_fd: int, stderr_fd: int) -> tuple[Any, int, OutputCapture]:
    """Move the protocol off fds 0/1 and point 1/2 at the capture files the server opened for us."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.dup(1)
    capture = OutputCapture(stdout_fd, stderr_fd)
    faulthandler.enable(file=capture.stderr.fd, all_threads=True)
    return proto_in, proto_out, capture


def _settle_in(work_dir: str) -> None:
    """After the lock-down: stdin from /dev/null, and the directories code expects, inside the scratch area.

    Best effort: whatever an earlier worker left there (a symlink in place of a directory, say) may make
    one fail, which must not stop the worker from starting; the sandbox decides what any of it can reach.
    """
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
    except OSError:
        os.close(0)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115 - lives as long as the process
    for directory in (work_dir, os.environ.get("HOME"), os.environ.get("TMPDIR")):
        if directory:
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                print(f"rlm-mcp worker: cannot create {directory}: {exc.strerror}", file=sys.stderr)
    try:
        os.chdir(work_dir)
    except OSError as exc:
        print(f"rlm-mcp worker: cannot enter {work_dir}: {exc.strerror}", file=sys.stderr)


def main(argv: list[str]) -> int:
    """argv: [package parent, stdout fd, stderr fd]; the first frame on stdin holds the policy.

    Until the lock-down the worker opens no file in a directory it may write (its working directory is
    the server's, and -I keeps it off sys.path); the session's paths never appear on its command line.
    """
    proto_in, proto_out, capture = _take_over_descriptors(int(argv[1]), int(argv[2]))
    start = frames.read_frame(proto_in)
    if start is None or start.get("op") != ops.START:
        os.write(capture.stderr.fd, b"rlm-mcp worker: the host did not send its start frame\n")
        return 3
    policy = SandboxPolicy.from_dict(start["policy"])
    sys.path[1:1] = [str(path) for path in start.get("paths") or []]  # the operator's PYTHONPATH
    started = time.perf_counter()
    report = lockdown.apply(policy)
    make_undumpable()
    lockdown_s = time.perf_counter() - started
    _settle_in(str(start["work_dir"]))
    repl = Repl(capture, HostChannel(proto_in, proto_out), policy if policy.mode != "off" else None)
    signal.signal(signal.SIGINT, repl.interrupt)
    layers = [layer.as_dict() for layer in report.layers]
    frames.write_frame(
        proto_out,
        {
            "op": ops.READY,
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "sandbox": layers,
            "lockdown_s": lockdown_s,
        },
    )
    while True:
        try:
            request = frames.read_frame(proto_in)
        except frames.ProtocolError as exc:
            os.write(capture.stderr.fd, f"rlm-mcp worker: protocol violation: {exc}\n".encode())
            return 3
        if request is None:
            return 0
        reply = repl.handle(request)
        reply["id"] = request.get("id")
        frames.write_frame(proto_out, reply)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
