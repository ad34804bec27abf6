"""Resource limits the worker sets on itself, so runaway code fails inside the REPL instead of hurting the machine.

Memory is capped with RLIMIT_DATA, not RLIMIT_AS: the address-space limit also counts thread stacks and
memory-mapped files, so it breaks threads (llm_query_batched) and huge mapped contexts, while the data
limit caps only what code allocates. A capped allocation raises MemoryError and the worker lives on.
A file written past the size limit fails with EFBIG (SIGXFSZ is ignored so it is an error, not a death).
Limits only go down: each is set with its hard limit equal to its soft one, and the worker holds no
capability to raise a hard limit, so code can lower them but never raise them past the policy. The CPU
limit is the exception, since it is renewed for every request (cumulative CPU time, so each request
needs a higher one): the host sets it from outside (prlimit, in host/worker_host.py) and seccomp refuses
the worker any change to it, so a cell can neither raise it nor lift its hard limit. It stays a backstop for
runaway code, not a bound on code that means harm (which may ignore or block SIGXCPU): that bound is the
host's own timeout, which kills the worker.
The worker is the OOM killer's first choice, dies with the server, and adopts any orphaned descendants so
the host can find and kill them.
"""

from __future__ import annotations

import ctypes
import resource
import signal

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def _cap(limit: int, wanted: int) -> int:
    hard = resource.getrlimit(limit)[1]
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)


def _set(limit: int, value: int) -> None:
    value = _cap(limit, value)
    resource.setrlimit(limit, (value, value))


def apply_limits(memory_bytes: int, write_bytes: int, open_files: int) -> list[str]:
    """Set the rlimits; returns what could not be set."""
    problems = []
    for name, limit, value in (
        ("memory (RLIMIT_DATA)", resource.RLIMIT_DATA, memory_bytes),
        ("file size (RLIMIT_FSIZE)", resource.RLIMIT_FSIZE, write_bytes),
        ("open files (RLIMIT_NOFILE)", resource.RLIMIT_NOFILE, open_files),
        ("core dumps (RLIMIT_CORE)", resource.RLIMIT_CORE, 0),
    ):
        try:
            _set(limit, value)
        except (ValueError, OSError) as exc:
            problems.append(f"{name}: {exc}")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return problems


def set_cpu_backstop(seconds: float) -> None:
    """Allow this much more CPU time, then SIGXCPU: a last resort if the host's own timeout never fires.

    Where seccomp holds, the worker may not change its CPU limit and the host has already set it for this
    request, so this changes nothing; it is for a worker without seccomp (where it is no bound on code
    that means harm: such code may also start processes)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 1
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (OSError, ValueError):
        pass  # refused by seccomp: the host's limit stands


def tie_to_host() -> list[str]:
    """OOM killer's first choice; killed if the server dies; parent of any orphaned descendants."""
    problems = []
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
    except OSError as exc:
        problems.append(f"oom_score_adj: {exc.strerror}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        problems.append("die with the server (PR_SET_PDEATHSIG): prctl failed")
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        problems.append("adopt orphans (PR_SET_CHILD_SUBREAPER): prctl failed")
    return problems
