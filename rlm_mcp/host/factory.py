"""The one recipe for a REPL worker: laid out in a session's directory and locked down as settings say.

Sessions, `rlm-mcp doctor`, the benchmarks and the tests build workers here, so all of them run the same
worker, without the session stack.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from rlm_mcp.config import Settings
from rlm_mcp.host.worker_host import WorkerHost
from rlm_mcp.sandbox import cgroups
from rlm_mcp.sandbox.policy import (
    SYSTEM_READ_ONLY,
    WRITE_SETTING,
    SandboxPolicy,
    python_paths,
    worker_environment,
)
from rlm_mcp.units import MiB

log = logging.getLogger(__name__)


def session_worker_host(settings: Settings, session_dir: Path) -> WorkerHost:
    """A REPL worker host laid out in a session's directory and locked down as settings say.

    The session's directory is the server's: its record, trace, the worker's log and captured output. The
    worker may write only `scratch/` inside it (its working directory, HOME, TMPDIR and its snapshots), and
    the server opens nothing by name there. It may read `fetched/`, where the server puts what it fetched
    for the session's URL loads. The one recipe for sessions, `rlm-mcp doctor` and the benchmarks, so all
    three run the same worker.
    """
    scratch = session_dir / "scratch"
    return WorkerHost(
        private_dir=session_dir,
        scratch_dir=scratch,
        env=worker_environment(scratch / "home"),
        policy=sandbox_policy(settings, scratch, fetched_dir(session_dir)),
        cgroup_parent=None if settings.sandbox == "off" else worker_cgroup_parent(),
    )


@functools.cache
def worker_cgroup_parent() -> str | None:
    """Where workers' cgroups go, if this machine delegates cgroup v2 to us (once per process: preparing
    may move the server into a leaf cgroup of its own); None on cgroup v1 or without delegation."""
    support = cgroups.cgroup_support()
    if not support.delegated:
        log.debug("no cgroup per worker: %s", support.reason)
        return None
    try:
        return support.prepare()
    except OSError as exc:
        log.warning("cgroup v2 is delegated but unusable (%s); RLIMIT_DATA and seccomp cap memory alone", exc)
        return None


def fetched_dir(session_dir: Path) -> Path:
    """Where the server puts a session's fetched URLs: the server's to write, the worker's to read."""
    return session_dir / "fetched"


def sandbox_policy(settings: Settings, scratch_dir: Path, fetched: Path | None = None) -> SandboxPolicy:
    """Reads: Python, system libraries, the roots (and what was fetched for the session). Writes: this
    session's scratch directory, nothing else."""
    extra = () if fetched is None else (str(fetched),)
    return SandboxPolicy(
        mode=settings.sandbox,
        read_only=(*python_paths(), *SYSTEM_READ_ONLY, *map(str, settings.roots), *extra),
        read_write=(str(scratch_dir),),
        memory_bytes=settings.memory_limit_mb * MiB,
        write_bytes=min(settings.write_limit_mb, settings.disk_limit_mb) * MiB,
        cell_cpu_s=settings.max_timeout_s + settings.interrupt_grace_s + 30,
        hidden=(str(settings.workspace),),
        write_setting="RLM_MCP_DISK_LIMIT_MB" if settings.disk_limit_mb < settings.write_limit_mb else WRITE_SETTING,
    )
