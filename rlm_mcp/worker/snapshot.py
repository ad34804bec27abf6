"""Saving the REPL's variables after each cell and bringing them back into a fresh worker.

Why here, in the worker: unpickling runs code, so it must only ever happen inside the sandbox, and the
bytes never need to cross the protocol pipe. One file per name, so a cell that changes one variable costs
one pickle, not the whole namespace. Each file is written atomically (temporary file, then rename) and its
SHA-256 goes back to the host, which keeps the list of files in a record signed with a key the worker
never sees; at restore the host hands the signed digests back and the worker refuses any file that does
not match, so a snapshot changed on disk is never unpickled.

The snapshot directory lies in the worker's scratch directory, so code may plant anything there. Restore
opens a file only without following a link and without blocking (O_NOFOLLOW | O_NONBLOCK), reads it
only once fstat says it is a regular file no larger than the snapshot cap, and unpickles it only once its
digest matches: a FIFO, a link or a swapped file costs that one name (the host's notes name it and say
why), never the others, and never hangs the restore. A save writes a temporary file it creates itself
(whatever was at that name is removed, never followed or opened), so a planted FIFO cannot hang it and a
planted link cannot send the bytes elsewhere.

What is saved: every public name that pickles, except what the REPL provides (contexts, helpers), which
come back by themselves. Modules are saved by name and re-imported; functions defined in cells are saved
as their source and re-run. Anything else that does not pickle (generators, open files, locks, sockets,
instances of classes defined in cells) is reported by name with the reason, never silently dropped.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import inspect
import io
import linecache
import os
import pickle
import signal
import stat
import threading
import types
from collections.abc import Iterator
from typing import Any

from rlm_mcp.units import MiB

# Where the worker's own classes lived before the package was laid out by trust boundary: snapshots written
# then name them so (an LLMError in a list of answers, a grep result, a saved module or cell function).
MOVED_MODULES = {
    "rlm_mcp.repl.worker": "rlm_mcp.worker.repl",
    "rlm_mcp.repl.helpers": "rlm_mcp.worker.helpers",
    "rlm_mcp.repl.snapshot": "rlm_mcp.worker.snapshot",
    "rlm_mcp.repl.mapped": "rlm_mcp.worker.mapped",
    "rlm_mcp.repl.variables": "rlm_mcp.worker.variables",
}
# The REPL's exception classes moved into worker/errors.py (issue 27); snapshots name them at their old homes.
MOVED_CLASSES = {
    ("rlm_mcp.worker.repl", "LLMError"): "rlm_mcp.worker.errors",
    ("rlm_mcp.worker.repl", "RLMError"): "rlm_mcp.worker.errors",
    ("rlm_mcp.worker.cluster", "MapError"): "rlm_mcp.worker.errors",
    ("rlm_mcp.worker.memory", "MemoryUnavailableError"): "rlm_mcp.worker.errors",
    ("rlm_mcp.worker.reader", "FormatError"): "rlm_mcp.worker.errors",
    ("rlm_mcp.worker.repl", "RLMAnswer"): "rlm_mcp.worker.channel",
}


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        module = MOVED_MODULES.get(module, module)
        return super().find_class(MOVED_CLASSES.get((module, name), module), name)


ALWAYS_RESAVE_BYTES = MiB  # small mutable values are re-pickled every cell: mutation keeps id and len
MUTABLE = (list, dict, set, bytearray)


OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class _RefusedFile(Exception):
    """A snapshot file that is not what the worker wrote there; the message says why, for the model."""


class Snapshotter:
    def __init__(self, directory: str, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.sizes: dict[str, int] = {}  # name -> bytes of its current snapshot file
        self.digests: dict[str, str] = {}

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.pickle")

    def save(self, namespace: dict[str, Any], provided: dict[str, Any], changed: set[str]) -> dict[str, Any]:
        """Snapshot what changed; returns {"saved": {name: digest}, "removed": [...], "unsaved": {name: why}}."""
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError:
            pass  # each file's write then fails, and says why
        current = {
            name: value
            for name, value in namespace.items()
            if not name.startswith("_") and provided.get(name, _MISSING) is not value
        }
        saved: dict[str, str] = {}
        unsaved: dict[str, str] = {}
        for name, value in current.items():
            small_mutable = isinstance(value, MUTABLE) or hasattr(value, "__dict__")
            if name not in changed and not (small_mutable and self.sizes.get(name, 0) < ALWAYS_RESAVE_BYTES):
                continue
            try:
                data = pickle.dumps(_portable(value), protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:  # pickle raises TypeError, PicklingError, AttributeError, ...
                unsaved[name] = f"{type(value).__name__}: {str(exc)[:120]}"
                self._forget(name)
                continue
            total = sum(self.sizes.values()) - self.sizes.get(name, 0) + len(data)
            if total > self.max_bytes:
                unsaved[name] = f"the snapshot would exceed {self.max_bytes:,} bytes ({len(data):,} for this name)"
                self._forget(name)
                continue
            digest = hashlib.sha256(data).hexdigest()
            if self.digests.get(name) != digest:
                try:
                    self._write(name, data)
                except OSError as exc:
                    unsaved[name] = f"its snapshot file could not be written ({exc.strerror or exc})"
                    self._forget(name)
                    continue
                self.digests[name] = digest
                saved[name] = digest
            self.sizes[name] = len(data)
        removed = [name for name in list(self.digests) if name not in current]
        for name in removed:
            self._forget(name)
        return {"saved": saved, "removed": removed, "unsaved": unsaved}

    def _write(self, name: str, data: bytes) -> None:
        """Replace `name`'s snapshot file with `data` in one rename, through a temporary file created afresh."""
        temporary = self._path(name) + ".tmp"
        _remove_quietly(temporary)  # a FIFO or a link planted there is removed, never opened or followed
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | OPEN_FLAGS, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(temporary, self._path(name))
        except BaseException:
            _remove_quietly(temporary)
            raise

    def _forget(self, name: str) -> None:
        self.sizes.pop(name, None)
        self.digests.pop(name, None)
        try:
            os.remove(self._path(name))
        except OSError:
            pass

    def restore(self, namespace: dict[str, Any], digests: dict[str, str]) -> dict[str, Any]:
        """Bring back the names whose files match the host's digests; returns {"restored": [...], "lost": {...}}.

        An interrupt (the host's, when the restore runs past its time: a value whose unpickling never ends,
        say) stops it: the name being restored and those after it are lost, those before it are kept."""
        restored: list[str] = []
        lost: dict[str, str] = {}
        pending = sorted(digests.items())
        with _interruptible():
            try:
                for name, digest in pending:
                    if self._restore_one(namespace, name, digest, lost):
                        restored.append(name)
            except KeyboardInterrupt:
                for name, _ in pending[len(restored) + len(lost) :]:
                    lost[name] = "not restored: the restore ran past its time limit and was stopped"
        return {"restored": restored, "lost": lost}

    def _restore_one(self, namespace: dict[str, Any], name: str, digest: str, lost: dict[str, str]) -> bool:
        """Bring back one name; whether it came back (if not, `lost` says why)."""
        try:
            data = self._read(name)
        except _RefusedFile as refused:
            lost[name] = f"its snapshot file {refused}; refused"
            return False
        except OSError as exc:
            lost[name] = f"its snapshot file is missing ({exc.strerror})"
            return False
        if hashlib.sha256(data).hexdigest() != digest:
            lost[name] = "its snapshot file was changed on disk; refused"
            return False
        try:
            namespace[name] = _revive(_Unpickler(io.BytesIO(data)).load(), namespace)
        except Exception as exc:
            lost[name] = f"could not be restored: {type(exc).__name__}: {str(exc)[:120]}"
            return False
        except KeyboardInterrupt:
            lost[name] = "restoring it ran past the time limit (its unpickling did not end); stopped"
            raise
        self.digests[name] = digest
        self.sizes[name] = len(data)
        return True

    def _read(self, name: str) -> bytes:
        """The bytes of `name`'s snapshot file, if it is a regular file within the snapshot cap."""
        try:
            descriptor = os.open(self._path(name), os.O_RDONLY | OPEN_FLAGS)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _RefusedFile("was replaced by a link") from None
            raise
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise _RefusedFile("is not a regular file (a FIFO or a device was put in its place)")
            if info.st_size > self.max_bytes:
                raise _RefusedFile(f"holds {info.st_size:,} bytes, more than the snapshot cap of {self.max_bytes:,}")
            os.set_blocking(descriptor, True)
            with os.fdopen(os.dup(descriptor), "rb") as handle:
                data = handle.read(self.max_bytes + 1)
        finally:
            os.close(descriptor)
        if len(data) > self.max_bytes:
            raise _RefusedFile(f"grew past the snapshot cap of {self.max_bytes:,} bytes while it was read")
        return data


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt meanwhile (the REPL ignores it between cells), in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


_MISSING = object()


class _Module:
    """A module, saved by its name."""

    def __init__(self, name: str) -> None:
        self.name = name


class _CellFunction:
    """A function defined in a cell, saved as its source (pickle can only save functions by reference)."""

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source


def _portable(value: Any) -> Any:
    if isinstance(value, types.ModuleType):
        return _Module(value.__name__)
    if isinstance(value, types.FunctionType) and value.__code__.co_filename.startswith(("<cell ", "<restored ")):
        try:
            source = inspect.getsource(value)
        except (OSError, TypeError) as exc:
            raise TypeError(f"its source is not available ({exc})") from None
        if value.__closure__ or value.__name__ == "<lambda>":
            raise TypeError("lambdas and closures cannot be saved; define it with def at the top level")
        return _CellFunction(value.__name__, inspect.cleandoc(source) if source[:1].isspace() else source)
    return value


def _revive(value: Any, namespace: dict[str, Any]) -> Any:
    if isinstance(value, _Module):
        return importlib.import_module(value.name)
    if isinstance(value, _CellFunction):
        filename = f"<restored {value.name}>"
        linecache.cache[filename] = (len(value.source), None, value.source.splitlines(True), filename)
        scope: dict[str, Any] = {}
        exec(compile(value.source, filename, "exec"), namespace, scope)
        return scope[value.name]
    return value
