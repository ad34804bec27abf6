"""The server's errors, in one hierarchy: a root, then families that say who must act on one.

- CallerError: the model or the user asked for something that cannot be done as asked (a tool result, or a
  command's message, shows it; the session is unaffected). UserError is the kind a tool turns into an isError
  result; ContextError and TooLarge are its load requests'.
- OperatorError: the operator fixes it (a flag, the environment, a file on disk).
- SubCallError: a sub-model's call gave no answer; its `kind` says why.
- WorkerError: the REPL worker process could not be started or kept.
- ClusterError: a map on the Ray cluster refused or failed.

A class that was a ValueError, OSError or RuntimeError keeps that base too, so every `except` that caught it
still does. The rule: public errors live here; a private signal (a leading underscore, raised and caught in one
module, such as host/worker_host.py's _WorkerGone) stays beside the code that raises and catches it.
tests/unit/test_errors.py holds it.

There are two hierarchies, by necessity: the worker runs model-written code and imports only the standard
library and itself (tests/test_boundary.py), so the errors REPL code sees (LLMError, MapError,
MemoryUnavailableError, FormatError, ...) live in rlm_mcp/worker/errors.py, and the server never imports them.
The one error both sides raise, bridge/frames.py's ProtocolError, stays in the shared bridge, which both may
import. This module imports nothing, so every module may import it.
"""


class RlmMcpError(Exception):
    """The root of the server's errors: `except RlmMcpError` catches every one of its own, and no bug."""


# The model or the user must act.


class CallerError(RlmMcpError):
    """The caller (the model, the user, a command's argument) asked for something that cannot be done."""


class UserError(CallerError, ValueError):
    """Bad input to a tool. The server turns it into an isError result; the session is unaffected."""


class ContextError(UserError):
    """A load request that cannot be served; the message says what to do instead."""


class TooLarge(ContextError):
    """A fetch passed the bytes allowed for it; `size`: the object's, where the store said it."""

    def __init__(self, message: str, size: int | None = None) -> None:
        super().__init__(message)
        self.size = size


class HandbookError(CallerError, ValueError):
    """A behavior that cannot be stored or found as asked; the message says what to change."""


class FindingsFull(CallerError, ValueError):
    """A session filed as many findings as it may (about one input, or in all), or the store is full of
    other sessions' findings; the message says which, in one line."""


class AskError(CallerError):
    """The question could not be asked at all (a path, the backend): exit code 2, with what to do."""


class TraceError(CallerError):
    """The file is not a trace that can be replayed: exit code 2, with what was wrong."""


# The operator must act.


class OperatorError(RlmMcpError):
    """Something the operator sets up is wrong or missing; the message names what to fix."""


class SettingsError(OperatorError, ValueError):
    """A setting from a flag or the environment has an invalid value; the message names which."""


class SigningKeyError(SettingsError):
    """The session-signing key exists but cannot be used; it is never silently replaced."""


class MemoryUnavailable(OperatorError, OSError):
    """The memory database cannot be opened or used; the server goes on without memory."""


class UnsafeFileError(OperatorError, OSError):
    """A path the server was about to use is not a plain regular file (or is too large to read)."""


# A sub-model's call failed.


class SubCallError(RlmMcpError):
    """A sub-call that did not produce an answer. `retryable` errors may succeed if sent again later."""

    def __init__(self, message: str, *, kind: str, retryable: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retryable = retryable
        self.status = status


# The worker process failed.


class WorkerError(RlmMcpError):
    """The REPL worker process could not be started or kept running."""


class WorkerStartError(WorkerError, RuntimeError):
    """The worker process could not be started; the message carries what it printed."""


# A map on the Ray cluster failed.


class ClusterError(RlmMcpError):
    """A map on the Ray cluster refused or failed."""


class MapRefused(ClusterError):
    """A map that cannot run at all; the message says what to set or change. (Not the worker's MapError: that
    is what REPL code sees for one object's failure, in rlm_mcp/worker/errors.py.)"""


class MapFailure(ClusterError):
    """One object's map failed, in a task on the cluster; the message is the reason (a plain str, whatever the
    model's code raised). cluster/pieces.py raises it in the task, cluster/driver.py reads it back."""
