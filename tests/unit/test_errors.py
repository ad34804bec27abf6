"""One exception hierarchy per side, each in one module (issue 27).

Public errors live in rlm_mcp/errors.py (the server's) or rlm_mcp/worker/errors.py (the worker's, which may
import nothing of the server's); a private signal, named with a leading underscore and raised and caught in one
module, stays beside its code. The shared bridge's ProtocolError is the one exception: both sides raise it.
"""

from __future__ import annotations

import ast
import builtins
import io
import pickle
from pathlib import Path

import pytest

from rlm_mcp import errors
from rlm_mcp.worker import errors as worker_errors
from rlm_mcp.worker import snapshot

PACKAGE = Path(__file__).resolve().parents[2] / "rlm_mcp"
HOMES = {PACKAGE / "errors.py", PACKAGE / "worker" / "errors.py"}
# Raised and caught on both sides of the trust boundary, so it lives in the one package both may import.
SHARED = {("bridge/frames.py", "ProtocolError")}
BUILTIN_EXCEPTIONS = {
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
}


def exception_classes() -> dict[tuple[str, str], list[str]]:
    """Every class in rlm_mcp that derives, by name, from a built-in exception or from another such class:
    (file, name) -> its bases."""
    classes: dict[tuple[str, str], list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base).rpartition(".")[2] for base in node.bases]
                classes[(path.relative_to(PACKAGE).as_posix(), node.name)] = bases
    names = set(BUILTIN_EXCEPTIONS)
    while True:
        more = {name for (_, name), bases in classes.items() if name not in names and names.intersection(bases)}
        if not more:
            break
        names |= more
    return {key: bases for key, bases in classes.items() if key[1] in names}


def test_every_public_exception_class_lives_in_an_errors_module() -> None:
    found = exception_classes()
    assert len(found) > 20  # the scan finds them at all
    astray = sorted(
        f"{path}:{name}"
        for path, name in found
        if not name.startswith("_") and PACKAGE / path not in HOMES and (path, name) not in SHARED
    )
    assert astray == [], "move these into rlm_mcp/errors.py or rlm_mcp/worker/errors.py"


def test_no_two_exception_classes_share_a_name() -> None:
    names = [name for _, name in exception_classes() if not name.startswith("_")]
    assert sorted({name for name in names if names.count(name) > 1}) == []


def test_every_server_error_descends_from_the_root_and_every_worker_error_from_its_own() -> None:
    server = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    worker = [
        value for value in vars(worker_errors).values() if isinstance(value, type) and issubclass(value, Exception)
    ]
    assert len(server) > 15 and len(worker) > 8
    assert [cls.__name__ for cls in server if not issubclass(cls, errors.RlmMcpError)] == []
    assert [cls.__name__ for cls in worker if not issubclass(cls, worker_errors.WorkerSideError)] == []


def test_each_error_is_still_caught_where_its_old_base_was() -> None:
    """`except ValueError` (or OSError, RuntimeError) still catches what it caught before the move."""
    was = {
        ValueError: [errors.UserError, errors.ContextError, errors.TooLarge, errors.SettingsError],
        OSError: [errors.MemoryUnavailable, errors.UnsafeFileError, worker_errors.LandlockError],
        RuntimeError: [errors.WorkerStartError, worker_errors.MemoryUnavailableError],
    }
    was[ValueError] += [errors.SigningKeyError, errors.HandbookError, errors.FindingsFull]
    was[OSError] += [worker_errors.SeccompError, worker_errors.NamespaceError]
    assert {
        base.__name__: [cls.__name__ for cls in classes if not issubclass(cls, base)] for base, classes in was.items()
    } == {
        "ValueError": [],
        "OSError": [],
        "RuntimeError": [],
    }
    assert str(worker_errors.SeccompError(1, "prctl: no")) == "[Errno 1] prctl: no"
    assert (
        errors.TooLarge("too big", 9).size == 9 and errors.SubCallError("x", kind="rate_limited").kind == "rate_limited"
    )


def test_a_snapshot_naming_a_repl_error_at_its_old_module_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots written before the move name LLMError as rlm_mcp.worker.repl's, MapError as worker.cluster's."""
    monkeypatch.setattr(worker_errors.LLMError, "__module__", "rlm_mcp.worker.repl")
    monkeypatch.setattr(worker_errors.MapError, "__module__", "rlm_mcp.worker.cluster")
    data = pickle.dumps(
        [worker_errors.LLMError("rate limited", "rate_limited"), worker_errors.MapError("no", "s3://b/k")]
    )
    monkeypatch.undo()
    assert b"rlm_mcp.worker.repl" in data and b"rlm_mcp.worker.cluster" in data and b"worker.errors" not in data
    llm, mapped = snapshot._Unpickler(io.BytesIO(data)).load()
    assert type(llm) is worker_errors.LLMError and llm.kind == "rate_limited"
    assert type(mapped) is worker_errors.MapError and str(mapped) == "no" and mapped.path == "s3://b/k"
