"""Clear words for what the sandbox refuses.

The kernel enforces the sandbox (seccomp, Landlock, namespaces) and answers a refused call with a bare
errno, which tells a model nothing about why or what to do instead. An audit hook stops the common Python
routes to a process or a socket first, with a message that says; code that goes around Python (ctypes,
raw system calls) still meets the kernel's refusal. Standard library only.
"""

from __future__ import annotations

import socket
import sys
from typing import Any

PROCESS_EVENTS = frozenset(
    {"os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty", "subprocess.Popen", "pty.spawn"}
)
NETWORK_EVENTS = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo"})
LOCAL_FAMILIES = frozenset({socket.AF_UNIX})  # socketpair() (asyncio) creates these and stays allowed

NO_PROCESSES = (
    "starting processes is disabled in the rlm-mcp sandbox: do the work in Python in this REPL "
    "(threads work; llm_query reaches the sub-model)"
)
NO_NETWORK = (
    "network access is disabled in the rlm-mcp sandbox: load inputs with the load_context tool "
    "and reach the sub-model with llm_query"
)


def install(*, processes: bool, network: bool) -> None:
    """Refuse process creation and/or networking at the Python level, with a message that explains."""

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if processes and event in PROCESS_EVENTS:
            raise PermissionError(NO_PROCESSES)
        if network:
            if event in NETWORK_EVENTS:
                raise PermissionError(NO_NETWORK)
            if event == "socket.__new__" and len(args) > 1 and args[1] not in LOCAL_FAMILIES and args[1] != -1:
                raise PermissionError(NO_NETWORK)

    sys.addaudithook(hook)
