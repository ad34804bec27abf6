"""A Ray head node on 127.0.0.1 for tests and benchmarks: `ray start --head --block` in a process group of
its own, stopped by that group's id (never `ray stop`, which ends every Ray process of the user).

With `venv=True` the head and its workers run from a virtual environment of their own (made with
--system-site-packages, so Ray and rlm-mcp are found), in the head's temporary directory: the kind of
user-owned Python installation a map's code would try to plant a .pth file in, and one whose damage, if a
test's attack got through, ends with the head."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

# Token authentication guards a cluster reachable from elsewhere; this one listens on loopback only.
ENVIRONMENT = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


STOP_GRACE_S = 3.0  # for the head to stop its processes (it rarely does, in 30 s); then the group is killed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _venv_python(where: str) -> str:
    """A virtual environment over this interpreter's packages; its python (Ray's workers run it too)."""
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", where], check=True)
    return os.path.join(where, "bin", "python")


def _plant(python: str, name: str, line: str) -> None:
    """A .pth file in `python`'s site-packages: its `import` line runs in every process that Python starts."""
    done = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"], check=True, capture_output=True, text=True
    )
    with open(os.path.join(done.stdout.strip(), name), "w") as handle:
        handle.write(line + "\n")


@contextlib.contextmanager
def ray_head(cpus: int = 2, timeout_s: float = 90.0, *, venv: bool = False, pth: str | None = None) -> Iterator[str]:
    """Yields the head's address (host:port) once it accepts connections. `pth`: an `import ...` line planted
    in the venv's site-packages before the head starts, so every worker runs it (a compromised node)."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's sockets live there (108-byte path limit)
    try:
        python = _venv_python(os.path.join(temp, "venv")) if venv or pth else sys.executable
        if pth:
            _plant(python, "zz_compromised.pth", pth)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    cli = [python, "-c", "from ray.scripts.scripts import main; main()"]  # `ray`, wherever pip put it
    command = [*cli, "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
               f"--num-cpus={cpus}", "--include-dashboard=false", "--disable-usage-stats",
               "--object-store-memory=100000000", f"--temp-dir={temp}"]  # fmt: skip
    log = open(os.path.join(temp, "head.log"), "w+b")  # noqa: SIM115 (closed below) a file, not a pipe that
    process = subprocess.Popen(  # nobody reads: a full pipe would block the head while it shuts down
        command, env={**os.environ, **ENVIRONMENT}, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                said = log.read().decode(errors="replace")[-2000:] if process.poll() is not None else ""
                raise RuntimeError(f"the Ray head did not start: {said or 'no answer on its port'}")
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
