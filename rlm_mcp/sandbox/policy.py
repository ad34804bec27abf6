"""What the host asks of a worker's lock-down, and how its report is told to the model and the log.

The layers themselves are applied inside the worker (rlm_mcp/worker/lockdown/); this module is the
contract both sides share: the policy sent as the worker's first frame, the layer names, and the
host-side reading of the report. Shared with the worker (tests/test_boundary.py).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "PYTHONPATH")
LAYERS = ("environment", "limits", "namespaces", "capabilities", "filesystem", "network", "processes")
OPEN_FILES = 1024
WRITE_SETTING = "RLM_MCP_WRITE_LIMIT_MB"  # what sets the largest file a worker writes, unless the disk cap is lower

# Read-only for every worker: what an interpreter and its C extensions may need to open. Not /dev/zero:
# mapped shared it is shared anonymous memory, which RLIMIT_DATA does not count (see seccomp.py).
SYSTEM_READ_ONLY = (
    "/usr",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/ssl",
    "/etc/mime.types",
    "/dev/null",
    "/dev/random",
    "/dev/urandom",
    "/proc/self",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/sys/devices/system/cpu",
)


def worker_environment(home: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's variables: an allow-list, never a key. HOME and TMPDIR lie in its scratch directory,
    which the worker creates itself once locked down (the server makes nothing inside it)."""
    environ = os.environ if environ is None else environ
    env = {name: environ[name] for name in PASSED_THROUGH if name in environ}
    env.setdefault("PATH", os.defpath)
    tmp = home / "tmp"
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONIOENCODING="utf-8", PYTHONDONTWRITEBYTECODE="1")
    return env


def python_paths() -> list[str]:
    """Where this interpreter and its packages live: the worker must keep importing from there."""
    places = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    places.update(entry for entry in sys.path if entry and os.path.isabs(entry))
    places.add(str(Path(__file__).resolve().parents[2]))  # this package, wherever it is installed
    return sorted(os.path.realpath(place) for place in places if os.path.exists(place))


@dataclass(frozen=True)
class SandboxPolicy:
    """What the host asks of a worker; sent as the worker's first frame (never on its command line, which
    every local process can read)."""

    mode: str  # auto | strict | off
    read_only: tuple[str, ...]
    read_write: tuple[str, ...]
    memory_bytes: int
    write_bytes: int
    cell_cpu_s: float
    open_files: int = OPEN_FILES
    hidden: tuple[str, ...] = ()  # bubblewrap mounts an empty directory over these (the workspace)
    write_setting: str = WRITE_SETTING  # the setting write_bytes came from, for the model's errors

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxPolicy:
        paths = {name: tuple(str(path) for path in data[name]) for name in ("read_only", "read_write", "hidden")}
        return cls(**{**data, **paths})


# What a missing layer lets the model's code do, said to the model (the operator's advice, such as what to
# install, goes to the log and `rlm-mcp doctor`). Layers whose absence changes nothing the code may do
# (bubblewrap under Landlock and seccomp, say) are not mentioned.
MODEL_TERMS = {
    "filesystem": "files outside the working directory are not protected: read and write only there and the inputs",
    "network": "the network is not blocked: open no connections (reach the sub-model with llm_query)",
    "processes": "starting processes is not blocked: start none, do the work in Python",
    "limits": "memory and file sizes are not capped: work in chunks",
    "environment": "the server's environment may be readable: do not look for keys",
}


def model_note(layers: list[dict[str, Any]]) -> str | None:
    """One line for the model, once a session, on what its code could do that the sandbox does not stop."""
    if all(layer["detail"] == "RLM_MCP_SANDBOX=off" for layer in layers if layer["name"] != "environment"):
        return None  # the server's instructions already say the REPL is not sandboxed
    said = [MODEL_TERMS[layer["name"]] for layer in layers if not layer["active"] and layer["name"] in MODEL_TERMS]
    return "sandbox gaps on this machine: " + "; ".join(said) if said else None


def summary(layers: list[dict[str, Any]]) -> str:
    """One line for the model and the log: which layers hold and which do not."""
    if all(layer["detail"] == "RLM_MCP_SANDBOX=off" for layer in layers if layer["name"] != "environment"):
        return "sandbox: off (RLM_MCP_SANDBOX=off): code runs with the user's rights, only the environment is scrubbed"
    active = [layer["name"] for layer in layers if layer["active"]]
    missing = [f"{layer['name']} ({layer['detail']})" for layer in layers if not layer["active"]]
    text = "sandbox: " + (", ".join(active) if active else "none")
    if missing:
        text += "; missing: " + "; ".join(missing)
    return text
