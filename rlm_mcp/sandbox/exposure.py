"""Whether model code on this server can read other processes of its user, as its REPL workers report it.

The server holds its secrets (API keys, logins) in its environment and is non-dumpable; the CLI processes
it starts for sub-calls (rlm_mcp/llm/cli_process.py) hold the same logins and are ordinary processes of the
user. Whether a worker can read those is a fact of the machine and the settings (Landlock, a user or PID
namespace of the worker's own), found by each worker when it locks itself down and reported as its
`environment` layer. The workers of one server share machine and settings, so the latest report speaks for
all of them. Whoever keeps secret-holding processes waiting (the CLI pools) asks here, and is told at once
when a worker that can read them starts.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

UNKNOWN = "no REPL worker has reported its sandbox yet"


class _Workers:
    readable: bool | None = None  # None until a worker has reported
    detail: str = UNKNOWN


_workers = _Workers()
_listeners: list[weakref.WeakMethod[Callable[[], None]]] = []


def workers_report(layers: Sequence[Mapping[str, Any]]) -> None:
    """A REPL worker has started with this sandbox report (called by the worker host)."""
    environment = next((layer for layer in layers if layer.get("name") == "environment"), None)
    readable = environment is None or not environment.get("active")
    detail = str(environment.get("detail")) if environment is not None else "the sandbox report has no environment"
    if readable and _workers.readable is not True:
        log.warning("REPL code can read other processes here, so none holding a secret is kept waiting: %s", detail)
    _workers.readable, _workers.detail = readable, detail
    if readable:
        for listener in list(_listeners):
            callback = listener()
            if callback is None:
                _listeners.remove(listener)
            else:
                callback()


def other_processes_closed() -> bool:
    """True once a worker has reported that it cannot read other processes of its user (and none since that
    it can): only then may a process holding a secret be kept waiting."""
    return _workers.readable is False


def why() -> str:
    """What the latest report said of other processes."""
    return _workers.detail


def when_readable(callback: Callable[[], None]) -> None:
    """Call the bound method `callback` whenever a worker that can read other processes starts (held weakly)."""
    _listeners[:] = [listener for listener in _listeners if listener() is not None]
    _listeners.append(weakref.WeakMethod(callback))  # type: ignore[arg-type]
