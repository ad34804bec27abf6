"""The worker's lock-down: what the host asks for (a policy), what the worker manages (a report of layers).

Model-written code runs next to the user's keys and files, and the context it reads may carry prompt
injection. Each layer below works without root or Docker and is applied where the machine supports it;
the worker then observes what actually holds (it does not trust a return code alone) and reports every
layer with the reason for any gap, so `rlm-mcp doctor`, the logs and the model all see the same truth.

Layers, in the order the worker applies them (namespaces before seccomp forbids unshare; Landlock and
seccomp while single-threaded, so every later thread inherits them):
  environment   allow-listed variables only, and the server's /proc entries closed (non-dumpable server)
  limits        memory (RLIMIT_DATA), file size, open files, no core dumps, a CPU backstop per cell; the
                OOM killer's first choice; dies with the server; adopts orphaned descendants
  namespaces    private user, network and IPC namespaces: no network interface at all
  capabilities  none held, none obtainable (no_new_privs)
  filesystem    Landlock: read-only the Python installation, system libraries and the roots; read-write
                the session's own directory; nothing else
  network       seccomp refuses socket() of every family, Landlock refuses TCP bind/connect, and the
                network namespace has no interface: any one of them closes it
  processes     seccomp refuses fork, vfork, exec and non-thread clone

Imported by the worker: standard library and stdlib-only modules of this package only.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "VIRTUAL_ENV", "PYTHONPATH")
LAYERS = ("environment", "limits", "namespaces", "capabilities", "filesystem", "network", "processes")
OPEN_FILES = 1024

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxPolicy:
        paths = {name: tuple(str(path) for path in data[name]) for name in ("read_only", "read_write", "hidden")}
        return cls(**{**data, **paths})


@dataclass
class Layer:
    name: str
    active: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Report:
    layers: list[Layer] = field(default_factory=list)

    def add(self, name: str, active: bool, detail: str) -> None:
        self.layers.append(Layer(name, active, detail))

    def active(self, name: str) -> bool:
        return any(layer.active for layer in self.layers if layer.name == name)


# -- keeping the server's secrets out of reach ---------------------------------------------------------------
#
# A process can read the environment and memory of another process of the same user through /proc
# (/proc/<pid>/environ, /proc/<pid>/mem), and the server's environment holds API keys. Two measures close
# that: the server marks itself non-dumpable, which denies those reads to same-user processes that lack
# CAP_SYS_PTRACE; and the worker gives up all its capabilities (and the right to regain them through exec)
# before it runs any user code, so it cannot override the first measure.

PR_CAPBSET_DROP = 24
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAPSET_SYSCALL = {"x86_64": 126, "aarch64": 91, "arm64": 91}


def _libc() -> Any | None:
    if sys.platform != "linux":
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def make_undumpable() -> bool:
    """Deny same-user processes access to this one's /proc/<pid>/environ, mem and cwd: the server holds API
    keys; a worker's environment and directory name its session. (A worker calls it once locked down.)"""
    libc = _libc()
    return libc is not None and libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0


def drop_privileges() -> None:
    """No new privileges ever, and no capabilities (as root, or inside the worker's own user namespace)."""
    libc = _libc()
    if libc is None:
        return
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    for capability in range(64):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0 and ctypes.get_errno() == errno.EINVAL:
            break  # past the last capability this kernel knows
    number = CAPSET_SYSCALL.get(platform.machine())
    if number is not None:
        header = (ctypes.c_uint32 * 2)(LINUX_CAPABILITY_VERSION_3, 0)
        data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable for two 32-bit words: all zero
        libc.syscall(number, ctypes.byref(header), ctypes.byref(data))


def _process_status() -> dict[str, str]:
    try:
        with open("/proc/self/status") as handle:
            return dict(line.rstrip("\n").split(":\t", 1) for line in handle if ":\t" in line)
    except OSError:
        return {}


def _server_environ_readable() -> bool:
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as handle:
            handle.read(1)
        return True
    except OSError:
        return False


# -- applying the policy, in the worker -----------------------------------------------------------------------


def apply(policy: SandboxPolicy) -> Report:
    """Lock this process down as far as the policy and the machine allow; report what holds."""
    from rlm_mcp.repl import guard, landlock, limits, namespaces, seccomp

    report = Report()
    if sys.platform != "linux":
        off = policy.mode == "off"
        problems = [] if off else limits.apply_limits(policy.memory_bytes, policy.write_bytes, policy.open_files)
        report.add("limits", not (problems or off), "; ".join(problems) or ("off" if off else "rlimits only"))
        for name in LAYERS[2:]:
            report.add(name, False, "needs Linux")
        _report_environment(report)
        return report
    lifetime_problems = limits.tie_to_host()  # not a restriction: even with the sandbox off, no orphans
    if policy.mode == "off":
        drop_privileges()  # costs nothing and breaks nothing: the worker never needs privileges
        for name in LAYERS[1:]:
            report.add(name, False, "RLM_MCP_SANDBOX=off")
        _report_environment(report)
        return report

    problems = limits.apply_limits(policy.memory_bytes, policy.write_bytes, policy.open_files)
    problems += lifetime_problems
    mib = 1024 * 1024
    report.add(
        "limits",
        not problems,
        "; ".join(problems)
        or f"memory {policy.memory_bytes // mib:,} MiB, file size {policy.write_bytes // mib:,} MiB, "
        f"{policy.open_files} open files, no core dumps, CPU backstop; OOM killer's first choice",
    )

    try:
        namespaces.isolate()
        report.add("namespaces", True, "private user, network and IPC namespaces")
    except OSError as exc:
        report.add("namespaces", False, f"{exc.strerror or exc} (unprivileged user namespaces may be disabled)")

    drop_privileges()
    status = _process_status()
    no_caps = status.get("CapEff", "").strip("0") == "" and status.get("NoNewPrivs", "0").strip() == "1"
    report.add(
        "capabilities",
        no_caps,
        "none held, none obtainable (no_new_privs)"
        if no_caps
        else f"CapEff {status.get('CapEff', '?')}, NoNewPrivs {status.get('NoNewPrivs', '?')}",
    )

    tcp_closed = False
    try:
        enforced = landlock.restrict(list(policy.read_only), list(policy.read_write))
        tcp_closed = enforced.tcp
        scoped = ", signals and abstract sockets kept inside" if enforced.scopes else ""
        report.add(
            "filesystem",
            True,
            f"Landlock ABI {enforced.abi}: read-only Python and the roots, read-write the session directory{scoped}",
        )
    except OSError as exc:
        report.add("filesystem", False, str(exc.strerror or exc))

    seccomp_problem = ""
    try:
        seccomp.install()
    except OSError as exc:
        seccomp_problem = str(exc.strerror or exc)

    network_by = [
        name
        for name, holds in (
            ("seccomp denies socket()", not seccomp_problem),
            ("Landlock denies TCP", tcp_closed),
            ("no interface in the network namespace", report.active("namespaces")),
        )
        if holds
    ]
    report.add("network", bool(network_by), "; ".join(network_by) or f"seccomp: {seccomp_problem}")
    report.add(
        "processes",
        not seccomp_problem,
        "seccomp denies fork, exec and non-thread clone (and shared anonymous memory)"
        if not seccomp_problem
        else f"seccomp: {seccomp_problem}",
    )
    guard.install(processes=not seccomp_problem, network=bool(network_by))
    _report_environment(report)
    return report


def _report_environment(report: Report) -> None:
    readable = _server_environ_readable()
    report.add(
        "environment",
        not readable,
        "allow-listed variables only; the server's /proc entries are closed"
        if not readable
        else "the server's /proc/<pid>/environ is readable (the server could not make itself non-dumpable)",
    )
    report.layers.sort(key=lambda layer: LAYERS.index(layer.name))


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
