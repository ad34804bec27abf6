"""The worker's lock-down: what the host asks for (a policy), what the worker manages (a report of layers).

Model-written code runs next to the user's keys and files, and the context it reads may carry prompt
injection. Each layer below works without root or Docker and is applied where the machine supports it;
the worker then observes what actually holds (it does not trust a return code alone) and reports every
layer with the reason for any gap, so `rlm-mcp doctor`, the logs and the model all see the same truth.

Layers, in the order the worker applies them (namespaces before seccomp forbids unshare; Landlock and
seccomp while single-threaded, so every later thread inherits them):
  environment   allow-listed variables only, the server's /proc entries closed (non-dumpable server), and
                other processes of the user closed too (by Landlock, or a user or PID namespace of the
                worker's own): those are where CLI sub-calls run, with logins in their environment. Without
                them the layer is reported missing, and the server keeps no spare CLI processes
  limits        memory (RLIMIT_DATA), file size, open files, no core dumps, a CPU backstop per cell; the
                OOM killer's first choice; dies with the server; adopts orphaned descendants
  namespaces    private user, network and IPC namespaces: no network interface at all
  capabilities  none held, none obtainable (no_new_privs)
  filesystem    Landlock: read-only the Python installation, system libraries and the roots; read-write
                the session's own directory; nothing else
  network       seccomp refuses socket() of every family, Landlock refuses TCP bind/connect, and the
                network namespace has no interface: any one of them closes it
  processes     seccomp refuses fork, vfork, exec and non-thread clone

"""

from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from rlm_mcp.sandbox.policy import LAYERS, SandboxPolicy
from rlm_mcp.sandbox.prctl import drop_privileges
from rlm_mcp.units import MiB
from rlm_mcp.worker.lockdown import guard, landlock, limits, namespaces, seccomp


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


def _parent_of(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return int(handle.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _only_own_processes_visible() -> bool:
    """No process in /proc but this one and its ancestors: a PID namespace of its own (bubblewrap's)."""
    try:
        visible = {int(name) for name in os.listdir("/proc") if name.isdigit()}
    except OSError:
        return False
    own, pid = set(), os.getpid()
    while pid > 0 and pid not in own:
        own.add(pid)
        pid = _parent_of(pid)
    return visible <= own


def _other_processes_closed_by(report: Report) -> str | None:
    """What keeps this worker from reading other processes of its user (their /proc environ, mem, fds), or
    None. A same-user process that holds no capability the worker lacks is readable unless Landlock scopes
    the worker (its rules also leave /proc/<pid> out), or the worker is in a user namespace of its own (the
    kernel then asks for CAP_SYS_PTRACE in the other's), or nothing else is visible (a PID namespace)."""
    if sys.platform != "linux":
        return None
    if report.active("filesystem"):
        return "Landlock"
    if report.active("namespaces"):
        return "the worker's own user namespace"
    if _only_own_processes_visible():
        return "the worker's own PID namespace"
    return None


# -- applying the policy, in the worker -----------------------------------------------------------------------


def apply(policy: SandboxPolicy) -> Report:
    """Lock this process down as far as the policy and the machine allow; report what holds."""
    if sys.platform != "linux":
        return _apply_without_linux(policy)
    report = Report()
    lifetime_problems = limits.tie_to_host()  # not a restriction: even with the sandbox off, no orphans
    if policy.mode == "off":
        drop_privileges()  # costs nothing and breaks nothing: the worker never needs privileges
        for name in LAYERS[1:]:
            report.add(name, False, "RLM_MCP_SANDBOX=off")
        _report_environment(report)
        return report

    problems = limits.apply_limits(policy.memory_bytes, policy.write_bytes, policy.open_files)
    problems += lifetime_problems
    report.add(
        "limits",
        not problems,
        "; ".join(problems)
        or f"memory {policy.memory_bytes // MiB:,} MiB, file size {policy.write_bytes // MiB:,} MiB, "
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


def _apply_without_linux(policy: SandboxPolicy) -> Report:
    """Elsewhere only the rlimits hold: every other layer is a Linux kernel feature."""
    report = Report()
    off = policy.mode == "off"
    problems = [] if off else limits.apply_limits(policy.memory_bytes, policy.write_bytes, policy.open_files)
    report.add("limits", not (problems or off), "; ".join(problems) or ("off" if off else "rlimits only"))
    for name in LAYERS[2:]:
        report.add(name, False, "needs Linux")
    _report_environment(report)
    return report


def _report_environment(report: Report) -> None:
    readable = _server_environ_readable()
    closed_by = _other_processes_closed_by(report)
    if sys.platform != "linux":
        detail = "allow-listed variables only; nothing here keeps a process from reading its user's other processes"
    elif readable:
        detail = "the server's /proc/<pid>/environ is readable (the server could not make itself non-dumpable)"
    elif closed_by is None:
        detail = (
            "allow-listed variables only and the server's /proc entries are closed, but nothing closes other "
            "processes of this user (no Landlock, no user or PID namespace of the worker's own): those holding no "
            "capability the worker lacks are readable, environment and memory, a CLI sub-call's process with its "
            "login among them while it runs (so no spare CLI processes are kept)"
        )
    else:
        detail = f"allow-listed variables only; the server's /proc entries are closed, other processes' by {closed_by}"
    report.add("environment", not readable and closed_by is not None, detail)
    report.layers.sort(key=lambda layer: LAYERS.index(layer.name))
