"""One coding-agent CLI process per sub-call, started before it is needed.

A CLI backend (claude-code, codex) answers each sub-call with a fresh process, so no call sees another's
context. Starting the process is most of a call's cost (Node loads the CLI: about half a second of a
1.4 s call to a fast provider), and it does not depend on the prompt, which the CLI reads from stdin. So
each command line keeps spares: processes already started and waiting for their prompt. A call takes a
spare (or starts a process) and starts the spare for the next call; spares not taken within SPARE_TTL_S
are stopped, so an idle server holds none.

Every process runs in its own session (process group) with stdin a pipe of ours, never the MCP stdio
channel; a call that runs past its time limit is killed with every process it started. What it prints is
read up to MAX_OUTPUT_BYTES.

A CLI process holds its login in its environment (CLAUDE_CODE_OAUTH_TOKEN, an API key: the server's
variables, which the worker never gets), and it is an ordinary process of the user: the server makes
itself non-dumpable, but cannot make its children so. Where the REPL worker can read other processes of
its user (no Landlock, no user or PID namespace of its own: the environment layer of its sandbox report
says which), a spare waiting 30 s is a login lying out for model code to read. So spares are kept only
once a worker has reported that it cannot read other processes (rlm_mcp/sandbox/exposure.py); otherwise
every call starts its process on demand (about 0.2 s more per claude-code call, see docs/benchmarks.md),
and the log and `rlm-mcp doctor` say why. A process in use during a call is as readable while it runs:
no server can prevent that from outside, and the report says so.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
import anyio.abc

from rlm_mcp.errors import SubCallError
from rlm_mcp.host.proctree import kill_tree
from rlm_mcp.sandbox import exposure
from rlm_mcp.units import MiB

log = logging.getLogger(__name__)

SPARE_TTL_S = 30.0
MAX_OUTPUT_BYTES = 16 * MiB
STDERR_SHOWN = 500


@dataclass
class CliRun:
    stdout: str
    stderr: str
    returncode: int


@dataclass
class _Spare:
    process: anyio.abc.Process
    started: float


class CliPool:
    """Processes of given command lines, each used for one prompt; see the module docstring."""

    def __init__(self, cwd: str, spares: int) -> None:
        self.cwd = cwd
        self.spares = spares  # most spares kept per command line
        self._spares: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], deque[_Spare]] = defaultdict(deque)
        exposure.when_readable(self.drop_spares)

    async def run(self, argv: Sequence[str], env: Mapping[str, str], prompt: str, timeout_s: float) -> CliRun:
        key = (tuple(argv), tuple(sorted(env.items())))
        process = self._take(key) or await self._start(argv, env)
        if self.spares and exposure.other_processes_closed() and len(self._spares[key]) < self.spares:
            try:
                self._spares[key].append(_Spare(await self._start(argv, env), time.monotonic()))
            except SubCallError as exc:  # this call still has its process
                log.debug("could not start a spare CLI process: %s", exc)
        try:
            with anyio.fail_after(timeout_s):
                return await self._exchange(process, prompt)
        except TimeoutError:
            raise SubCallError(f"no answer from the CLI in {timeout_s:g} s", kind="timeout", retryable=True) from None
        finally:
            if process.returncode is None:
                kill_tree(process.pid)
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await process.aclose()

    def _take(self, key: tuple[tuple[str, ...], tuple[tuple[str, str], ...]]) -> anyio.abc.Process | None:
        spares = self._spares[key]
        while spares:
            spare = spares.popleft()
            if spare.process.returncode is None and time.monotonic() - spare.started < SPARE_TTL_S:
                return spare.process
            kill_tree(spare.process.pid)
        return None

    async def _start(self, argv: Sequence[str], env: Mapping[str, str]) -> anyio.abc.Process:
        try:
            return await anyio.open_process(
                list(argv),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=self.cwd,
                env=dict(env),
                start_new_session=True,  # its own process group: a timeout kills what it started too
            )
        except OSError as exc:
            raise SubCallError(f"cannot start {argv[0]}: {exc}", kind="no_backend") from None

    async def _exchange(self, process: anyio.abc.Process, prompt: str) -> CliRun:
        assert process.stdin is not None and process.stdout is not None and process.stderr is not None
        chunks: dict[str, list[bytes]] = {"stdout": [], "stderr": []}

        async def drain(name: str, stream: anyio.abc.ByteReceiveStream) -> None:
            size = 0
            async for chunk in stream:
                if size < MAX_OUTPUT_BYTES:
                    chunks[name].append(chunk[: MAX_OUTPUT_BYTES - size])
                size += len(chunk)

        async with anyio.create_task_group() as group:
            group.start_soon(drain, "stdout", process.stdout)
            group.start_soon(drain, "stderr", process.stderr)
            try:
                await process.stdin.send(prompt.encode("utf-8"))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, BrokenPipeError):
                pass  # it exited early; its stderr says why
            await process.stdin.aclose()
            returncode = await process.wait()
        text = {name: b"".join(parts).decode("utf-8", "replace") for name, parts in chunks.items()}
        return CliRun(text["stdout"], text["stderr"], returncode)

    def reap(self) -> None:
        """Stop spares past their time to live (called periodically, and the pool's spares at close)."""
        now = time.monotonic()
        for spares in self._spares.values():
            for spare in [spare for spare in spares if now - spare.started >= SPARE_TTL_S]:
                spares.remove(spare)
                kill_tree(spare.process.pid)

    def drop_spares(self) -> None:
        """Stop every spare now: a worker that can read them has started."""
        for spares in self._spares.values():
            while spares:
                kill_tree(spares.popleft().process.pid)

    async def aclose(self) -> None:
        for spares in self._spares.values():
            while spares:
                spare = spares.popleft()
                kill_tree(spare.process.pid)
                with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                    await spare.process.aclose()


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@\[\]-]{0,127}")


def cli_model(model: str) -> str:
    """A model name as a CLI argument: REPL code chooses it (llm_query(model=...)), so nothing but a name
    goes on the command line, and it is passed as `--model=NAME`, one argument that cannot become an option."""
    if not MODEL_NAME.fullmatch(model):
        raise SubCallError(
            f"{model[:80]!r} is not a model name (letters, digits and ._:/@-, starting with a letter or digit)",
            kind="provider",
        )
    return f"--model={model}"


def child_environment(environ: Mapping[str, str], drop: Sequence[str] = ()) -> dict[str, str]:
    """The server's environment for a CLI, without what would make it think it runs inside a host session
    (a CLI launched by Claude Code refuses to nest, or joins the parent's session) and without `drop`."""
    hidden = {"CLAUDECODE", "CLAUDE_CODE_ENTRYPOINT", "CLAUDE_CODE_SSE_PORT", "MCP_CONNECTION_NONBLOCKING", *drop}
    return {name: value for name, value in environ.items() if name not in hidden}


def short(text: str) -> str:
    """The end of a CLI's stderr, for an error message: enough to see why, bounded."""
    text = text.strip()
    return text[-STDERR_SHOWN:] if text else "(nothing on stderr)"
