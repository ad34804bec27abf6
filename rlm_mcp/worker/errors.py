"""The worker's errors, in one hierarchy: those REPL code sees and catches, and the lockdown's.

Why a second hierarchy beside rlm_mcp/errors.py: the worker runs model-written code, so it imports only the
standard library and its own modules (tests/test_boundary.py), never the server's; and the server never
imports the worker's internals. Each side's errors live in its own module. The names REPL code reads (LLMError,
RLMError, MapError, MemoryUnavailableError, documented in rlm_help() and the README) are kept as they are; the
server's unrelated map error is MapRefused, so no two classes share a name. A private signal (a leading
underscore, raised and caught in one module) stays beside its code. tests/unit/test_errors.py holds the rule.

Snapshots name these classes at their old modules (rlm_mcp.worker.repl.LLMError, ...): worker/snapshot.py's
MOVED_CLASSES finds them here.
"""

from __future__ import annotations


class WorkerSideError(Exception):
    """The root of the worker's errors."""


# What REPL code sees.


class LLMError(WorkerSideError):
    """A sub-call that failed: returned in place of an answer by llm_query_batched, raised by llm_query."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


class RLMError(LLMError):
    """A child RLM that failed (its root model could not be reached, its budget could not be reserved, ...)."""


class MapError(WorkerSideError):
    """One object's part of a map that failed (its code raised, or its node failed it after retries); `path`
    says which object."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class MemoryUnavailableError(WorkerSideError, RuntimeError):
    """The server could not do what was asked of its memory (it is off, or its database failed)."""


class FormatError(WorkerSideError):
    """The file cannot be loaded as what its name says, and there is nothing sensible to fall back to."""


# The lockdown's, before any model code runs.


class LockdownError(WorkerSideError, OSError):
    """A layer of the sandbox could not be applied; the message says which step failed."""


class SeccompError(LockdownError):
    """The filter could not be installed; the message says why."""


class LandlockError(LockdownError):
    """Landlock is missing or refused the ruleset; the message says which step failed."""


class NamespaceError(LockdownError):
    """The namespaces could not be entered; the message says which step failed."""
