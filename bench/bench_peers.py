"""Measure rlm-mcp against the other RLM MCP servers on PyPI, in one run, on this machine.

Why: claims such as "starts faster", "costs the root model less context", "survives an infinite loop" or
"loads a 1 GB log" only mean something next to the alternatives a user would otherwise install, measured the
same way in the same run. Each server is a child process spoken to over stdio by an MCP client, exactly as a
host launches it; nothing is imported in-process.

How: the peers (aleph-rlm 0.9.4, rlm-tools 0.1.0) import `mcp.server.fastmcp`, which mcp 2.x removed, so each
gets its own virtual environment with `mcp<2`, created on first use under the cache directory (default
`~/.cache/rlm-mcp-bench/peers/<name>`) and reused afterwards. This very file is then run with `--driver` by the
Python of the server's environment: the peers are measured with the mcp 1.x client of their own venv, rlm-mcp
with the mcp 2.x client of this interpreter, both through the same `stdio_client` + `ClientSession` code (the
pre-2026 initialize handshake that hosts speak today). A small adapter per server says how it loads a file,
runs code and reports errors. A peer that fails to install or start is a row with the reason, not a crash.

Measured per server: cold start to an answered tools/list; the size of tools/list (paid by the root model on
every turn); loading a 10 MB, 100 MB (and with `--full` 1 GB) log file; a trivial exec round trip; an infinite
loop with a 3 s timeout (time to return, does state survive); what `print('x' * 10_000_000)` sends back; and a
single needle in a 10 MB haystack found with code. Every load is timed into a REPL that already exists (rlm-mcp
spawns its worker process on a session's first call: that cost is bench_core.py's "first run_code"), each
server keeps its own defaults (output limits, sandbox), and each server is measured alone, one after the other.
Ratios are ours / theirs, so below 1x is smaller or faster for rlm-mcp. The table goes to stdout (Markdown, via
bench/report.py); progress to stderr; the servers' own stderr to `<cache>/logs/<name>.log`.

Run (with the Python that has rlm-mcp installed; the first run also needs PyPI for the peers' venvs):
    python bench/bench_peers.py [--quick | --full] [--cache-dir DIR]
--quick loads only the 10 MB file and repeats less; --full adds the 1 GB file. The default takes about a minute
once the venvs exist.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import print_report

MB = 1_000_000
Row = tuple[str, str, str, str, str]
Results = dict[str, Any]

HANG_TIMEOUT_S = 3  # the time limit asked for `while True: pass`
HANG_CAP_S = 30.0  # how long the client waits for that call before calling the server hung
LOAD_EXEC_TIMEOUT_S = 300  # exec time limit while loading (rlm-tools loads with code; its maximum is 300)
COLD_CAP_S = 60.0
TRIVIAL_CODE = "print(2)"
BIG_PRINT_CODE = "print('x' * 10_000_000)"


@dataclass(frozen=True)
class ServerSpec:
    """How to obtain and launch one server. `args` may hold {data} (the readable root) and {workspace}."""

    name: str
    adapter: str
    requirements: tuple[str, ...] = ()
    script: str = ""
    args: tuple[str, ...] = ()
    distribution: str = ""


OURS = ServerSpec(
    name="rlm-mcp",
    adapter="rlm-mcp",
    script="rlm-mcp",
    args=("--root", "{data}", "--workspace", "{workspace}"),
    distribution="rlm-mcp",
)
# The versions below are the ones that start on this machine (checked with mcp 1.30.0, the newest 1.x).
PEERS = (
    ServerSpec(
        name="aleph-rlm",
        adapter="aleph",
        requirements=("aleph-rlm==0.9.4", "mcp<2"),
        script="aleph",
        # load_file (read by path) is an "action tool": only with --enable-actions, inside --workspace-root.
        args=("--enable-actions", "--workspace-root", "{data}", "--workspace-mode", "fixed"),
        distribution="aleph-rlm",
    ),
    ServerSpec(
        name="rlm-tools",
        adapter="rlm-tools",
        requirements=("rlm-tools==0.1.0", "mcp<2"),
        script="rlm-tools",
        distribution="rlm-tools",
    ),
)


def log(message: str) -> None:
    """Progress goes to stderr so that stdout stays a clean Markdown report."""
    print(f"[bench peers] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# Driver: runs inside the server's own environment (mcp 1.x for the peers, 2.x for rlm-mcp). Imports only mcp,
# anyio and the standard library, and writes one JSON object per line to stdout: {"key": ..., "value": ...}.
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One tool call as the client saw it: the text content, the size of the whole result, and any error."""

    text: str
    json_chars: int
    error: str | None
    elapsed: float


def emit(key: str, value: Any) -> None:
    print(json.dumps({"key": key, "value": value}), flush=True)


def short(text: str, limit: int = 160) -> str:
    """One line of at most `limit` characters, for an error shown in a table cell."""
    flat = " ".join(text.split()).replace("|", "/")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


async def call_tool(session: Any, tool: str, arguments: dict[str, Any]) -> Outcome:
    """Call one tool and time it; works with the ClientSession of mcp 1.x and of 2.x."""
    started = time.perf_counter()
    result = await session.call_tool(tool, arguments)
    elapsed = time.perf_counter() - started
    dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    text = "".join(str(item.get("text", "")) for item in dumped.get("content", []))
    error = short(text) if dumped.get("isError") else None
    return Outcome(text, len(json.dumps(dumped)), error, elapsed)


class Adapter:
    """rlm-mcp: load_context(path=, name=) binds `context`; run_code(code=, timeout_s=) runs a cell."""

    var = "context"

    def __init__(self, session: Any, data_dir: str) -> None:
        self.session, self.data_dir, self.timeout_s = session, data_dir, 60.0

    async def open(self, timeout_s: float) -> None:
        """Have a REPL ready whose cells stop after `timeout_s` (`var` is bound by the next `load`), so that a
        load is timed as a load: rlm-mcp spawns its worker process on a session's first call."""
        self.timeout_s = timeout_s
        outcome = await self.exec("pass")
        if outcome.error:
            raise RuntimeError(f"run_code: {outcome.error}")

    async def load(self, path: str) -> Outcome:
        return await call_tool(self.session, "load_context", {"path": path, "name": self.var})

    async def exec(self, code: str) -> Outcome:
        return await call_tool(self.session, "run_code", {"code": code, "timeout_s": self.timeout_s})


class AlephAdapter(Adapter):
    """aleph-rlm: load_file(path=, context_id=) binds `ctx` in that context's REPL; exec_python(code=, context_id=)
    runs code there (no REPL before a context is loaded); configure(sandbox_timeout=) sets the time limit.
    Errors come back as text starting with "Error:" or "## Execution Error"."""

    var = "ctx"
    context_id = "default"

    async def open(self, timeout_s: float) -> None:
        for tool, arguments in (
            ("configure", {"sandbox_timeout": float(timeout_s)}),
            ("load_context", {"content": "bench", "context_id": self.context_id}),
        ):
            outcome = self.checked(await call_tool(self.session, tool, arguments))
            if outcome.error:
                raise RuntimeError(f"{tool}: {outcome.error}")

    def checked(self, outcome: Outcome) -> Outcome:
        if outcome.error is None and outcome.text.lstrip().startswith(("Error:", "## Execution Error")):
            outcome.error = short(outcome.text)
        return outcome

    async def load(self, path: str) -> Outcome:
        arguments = {"path": path, "context_id": self.context_id}
        return self.checked(await call_tool(self.session, "load_file", arguments))

    async def exec(self, code: str) -> Outcome:
        arguments = {"code": code, "context_id": self.context_id}
        return self.checked(await call_tool(self.session, "exec_python", arguments))


class RlmToolsAdapter(Adapter):
    """rlm-tools: rlm_start(path=<directory>) opens a session with a fixed execution_timeout_seconds; there is
    no load tool, so a load is rlm_execute(code="context = read_file(<name>)"). rlm_execute returns JSON text
    {"stdout", "error"}; a session allows max_execute_calls (default 50, raised here to 10,000)."""

    session_id: str | None = None

    async def open(self, timeout_s: float) -> None:
        if self.session_id is not None:
            await call_tool(self.session, "rlm_end", {"session_id": self.session_id})
        started = await call_tool(
            self.session,
            "rlm_start",
            {
                "path": self.data_dir,
                "query": "benchmark",
                "include_metadata": False,
                "max_execute_calls": 10_000,
                "execution_timeout_seconds": max(1, round(timeout_s)),
            },
        )
        payload = json.loads(started.text)
        if "session_id" not in payload:
            raise RuntimeError(f"rlm_start: {short(started.text)}")
        self.session_id = str(payload["session_id"])

    async def load(self, path: str) -> Outcome:
        return await self.exec(f"{self.var} = read_file({os.path.relpath(path, self.data_dir)!r})")

    async def exec(self, code: str) -> Outcome:
        outcome = await call_tool(self.session, "rlm_execute", {"session_id": self.session_id, "code": code})
        if outcome.error is None:
            try:
                error = json.loads(outcome.text).get("error")
            except (ValueError, AttributeError):
                error = f"unreadable reply: {outcome.text[:100]}"
            outcome.error = short(str(error)) if error else None
        return outcome


ADAPTERS: dict[str, type[Adapter]] = {"rlm-mcp": Adapter, "aleph": AlephAdapter, "rlm-tools": RlmToolsAdapter}


@asynccontextmanager
async def connect(config: dict[str, Any]) -> AsyncIterator[Any]:
    """Launch the server and complete the initialize handshake; its stderr goes to the log file."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=config["command"], args=config["args"], cwd=config["cwd"])
    with open(config["log_path"], "a", encoding="utf-8") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


def log_tail(config: dict[str, Any]) -> str:
    """The server's last stderr line (a traceback's last line names the error): why a server stopped."""
    try:
        lines = Path(config["log_path"]).read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return short(lines[-1], 200) if lines else ""


def failure_reason(exc: BaseException, config: dict[str, Any]) -> str:
    """The innermost client-side exception, then the server's last stderr lines (where the real cause is)."""
    while inner := getattr(exc, "exceptions", None):  # an ExceptionGroup from the client's task group
        exc = inner[0]
    tail = log_tail(config)
    return short(f"{type(exc).__name__}: {exc}" + (f"; server stderr: {tail}" if tail else ""), 300)


async def phase_cold(config: dict[str, Any]) -> bool:
    """Launch to answered tools/list, `cold_repeats` times; the first answer also gives the tools/list size."""
    import anyio

    samples: list[float] = []
    for i in range(config["cold_repeats"]):
        started = time.perf_counter()
        try:
            with anyio.fail_after(COLD_CAP_S):
                async with connect(config) as session:
                    tools = await session.list_tools()
                    samples.append(time.perf_counter() - started)
        except Exception as exc:
            emit("start_error", failure_reason(exc, config))
            return False
        if i == 0:
            dumped = [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools.tools]
            emit("tools", {"chars": len(json.dumps(dumped)), "count": len(dumped)})
        log(f"{config['name']}: cold start {i + 1}/{config['cold_repeats']}: {samples[-1] * 1000:.0f} ms")
    emit("cold_start_s", samples)
    return True


async def phase_loads(config: dict[str, Any]) -> None:
    """Each file loaded `repeats` times, each time into a freshly opened REPL (for rlm-tools also a fresh file
    cache), then `len()` of the bound variable checked against the file's size."""
    import anyio

    async with connect(config) as session:
        adapter = ADAPTERS[config["adapter"]](session, config["data_dir"])
        for label, path, size, cap, repeats in config["loads"]:
            key, samples = f"load {label}", []
            for _ in range(repeats):
                await adapter.open(LOAD_EXEC_TIMEOUT_S)
                with anyio.move_on_after(cap) as scope:
                    outcome = await adapter.load(path)
                if scope.cancelled_caught:
                    emit(key, {"error": f"no answer after {cap:.0f} s"})
                    log(f"{config['name']}: load {label}: no answer after {cap:.0f} s, skipping larger files")
                    return
                if outcome.error:
                    emit(key, {"error": outcome.error})
                    log(f"{config['name']}: load {label} failed: {outcome.error}")
                    break
                samples.append(outcome.elapsed)
            else:
                note = f"len() check: no answer after {cap:.0f} s"
                with anyio.move_on_after(cap):
                    check = await adapter.exec(f"print(len({adapter.var}))")
                    note = "" if str(size) in check.text else f"len() check failed: {short(check.text, 80)}"
                emit(key, {"samples": samples, "note": note})
                log(f"{config['name']}: load {label}: " + ", ".join(f"{x:.3f} s" for x in samples) + f" {note}")


async def phase_exec(config: dict[str, Any]) -> None:
    """In one fresh server: trivial round trips, a huge print, the needle, then the infinite loop (last)."""
    import anyio

    async with connect(config) as session:
        adapter = ADAPTERS[config["adapter"]](session, config["data_dir"])
        await adapter.open(HANG_TIMEOUT_S)

        samples: list[float] = []
        for i in range(config["warmup"] + config["calls"]):
            outcome = await adapter.exec(TRIVIAL_CODE)
            if outcome.error or "2" not in outcome.text:
                emit("exec_s", {"error": outcome.error or short(outcome.text)})
                break
            if i >= config["warmup"]:
                samples.append(outcome.elapsed)
        else:
            emit("exec_s", samples)
            log(f"{config['name']}: exec p50 {statistics.median(samples) * 1000:.2f} ms (n={len(samples)})")

        with anyio.move_on_after(HANG_CAP_S) as scope:
            big = await adapter.exec(BIG_PRINT_CODE)
            emit("big_print", {"chars": len(big.text), "json_chars": big.json_chars, "s": big.elapsed})
            log(f"{config['name']}: 10M-char print returned {len(big.text):,} chars")
        if scope.cancelled_caught:
            emit("big_print", {"error": f"no answer after {HANG_CAP_S:.0f} s"})

        niah = config["niah"]
        loaded = await adapter.load(niah["path"])
        if loaded.error:
            emit("niah", {"error": loaded.error})
        else:
            v = adapter.var
            found = await adapter.exec(f"i = {v}.find('NEEDLE-')\nprint({v}[i:{v}.find(chr(10), i)])")
            correct = niah["answer"] in found.text and not found.error
            emit("niah", {"correct": correct, "chars": len(found.text), "json_chars": found.json_chars})
            log(f"{config['name']}: needle {'found' if correct else 'NOT found'}: {short(found.text, 100)}")

        setup = await adapter.exec("survivor = 6 * 7")
        if setup.error:
            emit("hang", {"error": setup.error})
            return
        log(f"{config['name']}: `while True: pass` with a {HANG_TIMEOUT_S} s limit (waiting up to {HANG_CAP_S:.0f} s)")
        started = time.perf_counter()
        with anyio.move_on_after(HANG_CAP_S) as scope:
            looped = await adapter.exec("while True: pass")
        returned = time.perf_counter() - started
        if scope.cancelled_caught:
            emit("hang", {"hung": True, "survived": None})
            log(f"{config['name']}: still running after {HANG_CAP_S:.0f} s")
            return
        survived: bool | None = None
        with anyio.move_on_after(HANG_CAP_S):
            after = await adapter.exec("print(survivor)")
            survived = "42" in after.text and not after.error
        emit("hang", {"s": returned, "survived": survived, "reply": short(looped.text, 100)})
        log(f"{config['name']}: loop call returned after {returned:.2f} s, state survived: {survived}")


async def driver_main(config: dict[str, Any]) -> None:
    emit("client", driver_versions())
    if not await phase_cold(config):
        return
    for phase in (phase_loads, phase_exec):
        try:
            await phase(config)
        except Exception as exc:  # a crashed or misbehaving server is a result, not a reason to stop
            emit(f"{phase.__name__}_error", failure_reason(exc, config))
            log(f"{config['name']}: {phase.__name__} failed: {exc!r}")


def driver_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"mcp": version("mcp"), "python": sys.version.split()[0]}


# ---------------------------------------------------------------------------------------------------------------
# Orchestration: data files, environments, one driver per server, the table.
# ---------------------------------------------------------------------------------------------------------------


def log_block(rng: random.Random, size: int) -> str:
    """About `size` characters of log-like ASCII lines."""
    levels, words = ["INFO", "DEBUG", "WARN", "ERROR"], ["request", "user", "cache", "miss", "db", "retry", "ok", "id"]
    lines, written = [], 0
    while written < size:
        line = (
            f"2024-06-01T{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
            f"{rng.randrange(1000):03d}Z {rng.choice(levels)} svc-{rng.randrange(40)} "
            f"{' '.join(rng.choices(words, k=rng.randrange(3, 12)))} latency_ms={rng.randrange(5000)}\n"
        )
        lines.append(line)
        written += len(line)
    return "".join(lines)


def write_log_file(path: Path, size: int, block: str) -> None:
    """`size` bytes (cut at a line end) made of a repeated block: generating 1 GB line by line would take minutes."""
    with open(path, "w", encoding="ascii") as handle:
        written = 0
        while written + len(block) <= size:
            handle.write(block)
            written += len(block)
        rest = block[: size - written]
        handle.write(rest[: rest.rfind("\n") + 1])


def write_niah_file(path: Path, size: int, block: str, needle: str, depth: float) -> None:
    """A haystack of `size` bytes with `needle` as its own line at `depth` (0..1) of the text."""
    hay = (block * (size // len(block) + 1))[:size]
    cut = hay.find("\n", int(len(hay) * depth)) + 1
    path.write_text(hay[:cut] + needle + "\n" + hay[cut:], encoding="ascii")


def run_quiet(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def clean_env() -> dict[str, str]:
    """This interpreter's environment without what would make another venv's Python import our packages."""
    env = dict(os.environ)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


def ensure_venv(spec: ServerSpec, cache: Path) -> tuple[Path, str]:
    """The peer's venv (created and installed if missing or stale); raises RuntimeError with the reason."""
    venv = cache / "peers" / spec.name
    python, marker = venv / "bin" / "python", venv / ".bench-requirements"
    wanted = "\n".join(spec.requirements)
    if python.exists() and marker.exists() and marker.read_text(encoding="utf-8") == wanted:
        return python, "venv reused"
    shutil.rmtree(venv, ignore_errors=True)
    log(f"{spec.name}: creating {venv} and installing {' '.join(spec.requirements)}")
    started = time.perf_counter()
    made = run_quiet([sys.executable, "-m", "venv", str(venv)], 120)
    if made.returncode != 0:
        raise RuntimeError(f"venv creation failed: {short(made.stderr)}")
    pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *spec.requirements]
    try:
        installed = run_quiet(pip, 600)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError("pip install took more than 600 s") from exc
    if installed.returncode != 0:
        errors = [line for line in installed.stderr.splitlines() if "ERROR" in line] or installed.stderr.splitlines()
        raise RuntimeError(f"pip install failed: {short(' / '.join(errors[-3:]), 240)}")
    marker.write_text(wanted, encoding="utf-8")
    return python, f"venv created in {time.perf_counter() - started:.0f} s"


def installed_version(python: Path, distribution: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    done = run_quiet([str(python), "-c", code], 60)
    return done.stdout.strip() or "?"


def run_driver(python: Path, config: dict[str, Any], timeout: float) -> Results:
    """Run this file with --driver under `python`; collect the JSON lines it managed to write."""
    results: Results = {}
    command = [str(python), str(Path(__file__).resolve()), "--driver"]
    try:
        done = subprocess.run(
            command, input=json.dumps(config), stdout=subprocess.PIPE, text=True, timeout=timeout, env=clean_env()
        )
        stdout, code = done.stdout, done.returncode
    except subprocess.TimeoutExpired as exc:
        raw = exc.stdout or ""
        stdout, code = raw.decode() if isinstance(raw, bytes) else raw, None
        results["driver_error"] = f"driver stopped after {timeout:.0f} s"
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        results[item["key"]] = item["value"]
    if code not in (0, None):
        results.setdefault("driver_error", f"driver exited with {code}")
    return results


@dataclass
class Server:
    spec: ServerSpec
    setup: str  # versions and how the environment came about, or why it failed
    results: Results
    failure: str | None = None


def measure_server(
    spec: ServerSpec, cache: Path, tmp: Path, data_dir: Path, base: dict[str, Any], driver_timeout: float
) -> Server:
    try:
        if spec.adapter == "rlm-mcp":
            python, how = Path(sys.executable), "this interpreter"
            command = shutil.which(spec.script, path=str(python.parent)) or shutil.which(spec.script)
            if command is None:
                raise RuntimeError(f"no `{spec.script}` command next to {python}")
        else:
            python, how = ensure_venv(spec, cache)
            command = str(python.parent / spec.script)
        version = installed_version(python, spec.distribution)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        log(f"{spec.name}: cannot install: {exc}")
        return Server(spec, "", {}, f"install failed: {exc}")

    workspace = tmp / "workspace" / spec.name
    workspace.mkdir(parents=True, exist_ok=True)
    fill = {"data": str(data_dir), "workspace": str(workspace)}
    config = {
        **base,
        "name": spec.name,
        "adapter": spec.adapter,
        "command": command,
        "args": [arg.format(**fill) for arg in spec.args],
        "cwd": str(workspace),
        "log_path": str(cache / "logs" / f"{spec.name}.log"),
    }
    Path(config["log_path"]).parent.mkdir(parents=True, exist_ok=True)
    Path(config["log_path"]).write_text("", encoding="utf-8")
    log(f"{spec.name} {version}: measuring (server log: {config['log_path']})")
    results = run_driver(python, config, driver_timeout)
    client = results.get("client", {})
    setup = f"{spec.name} {version}, mcp {client.get('mcp', '?')} ({how})"
    failure = None
    if "start_error" in results:
        failure = f"failed to start: {results['start_error']}"
    elif "cold_start_s" not in results:
        failure = results.get("driver_error", "no results")
    return Server(spec, setup, results, failure)


# A cell is either a number (to format and divide) or a text (an error, "hung", "yes"): Value.
Value = float | str | None


def load_value(label: str) -> Callable[[Results], Value]:
    def get(results: Results) -> Value:
        item = results.get(f"load {label}")
        if item is None:
            return results.get("phase_loads_error")
        if "error" in item:
            return f"error: {item['error']}"
        median = statistics.median(item["samples"])
        return median if not item.get("note") else f"{median:.3f} s ({item['note']})"

    return get


def exec_value(results: Results) -> Value:
    item = results.get("exec_s", results.get("phase_exec_error"))
    if isinstance(item, list):
        return statistics.median(item)
    return f"error: {item['error']}" if isinstance(item, dict) else item


def item_value(key: str, name: str) -> Callable[[Results], Value]:
    def get(results: Results) -> Value:
        item = results.get(key)
        if item is None:
            return results.get("phase_exec_error")
        if "error" in item:
            return f"error: {item['error']}"
        return item.get(name)

    return get


def hang_value(results: Results) -> Value:
    item = results.get("hang")
    if item is None:
        return results.get("phase_exec_error")
    if "error" in item:
        return f"error: {item['error']}"
    return f"hung (>{HANG_CAP_S:.0f} s)" if item.get("hung") else float(item["s"])


def survived_value(results: Results) -> Value:
    item = results.get("hang")
    if item is None or "error" in item:
        return None
    if item.get("hung"):
        return "unknown (server still busy)"
    return {True: "yes", False: "no", None: "unknown (no answer)"}[item.get("survived")]


def niah_value(results: Results) -> Value:
    item = results.get("niah")
    if item is None:
        return results.get("phase_exec_error")
    if "error" in item:
        return f"error: {item['error']}"
    return "correct" if item["correct"] else "incorrect"


def is_number(value: object) -> TypeGuard[float]:
    """JSON gives ints for character counts: those divide too (but a bool is not a measurement)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fmt(value: Value, unit: str) -> str:
    if value is None:
        return "not measured"
    if isinstance(value, str):
        return value
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "ms":
        return f"{value * 1000:.2f} ms"
    return f"{round(value):,} chars"


def build_rows(ours: Server, peers: list[Server], sizes: list[tuple[str, int]]) -> list[Row]:
    measures: list[tuple[str, str, str, Callable[[Results], Value]]] = [
        (
            "cold start to answered tools/list, median",
            "<= 1 s",
            "s",
            lambda r: statistics.median(r["cold_start_s"]) if "cold_start_s" in r else None,
        ),
        ("tools/list JSON, paid by the root model every turn", "<= 4,000", "chars", item_value("tools", "chars")),
        *((f"load a {label} log file by path, median (n={n})", "", "s", load_value(label)) for label, n in sizes),
        (f"exec round trip `{TRIVIAL_CODE}`, median", "<= 5 ms", "ms", exec_value),
        (f"`while True: pass` with a {HANG_TIMEOUT_S} s limit: call returns after", "", "s", hang_value),
        ("... a variable set before the loop survives", "yes", "", survived_value),
        (f"`{BIG_PRINT_CODE}`: text returned to the client", "", "chars", item_value("big_print", "chars")),
        ("... the whole tools/call result as JSON", "", "chars", item_value("big_print", "json_chars")),
        ("S-NIAH, 10 MB, needle at 60%, found with code: answer", "correct", "", niah_value),
        ("S-NIAH: text returned to the client", "", "chars", item_value("niah", "chars")),
    ]
    rows: list[Row] = []
    for peer in peers:
        rows.append((f"environment vs {peer.spec.name}", ours.setup, "", peer.setup or "not installed", ""))
        if peer.failure:
            rows.append((f"{peer.spec.name}: not measured", "", "", peer.failure, ""))
    for label, target, unit, get in measures:
        mine = get(ours.results) if not ours.failure else ours.failure
        for peer in peers:
            if peer.failure:
                continue
            theirs = get(peer.results)
            ratio = ""
            if is_number(mine) and is_number(theirs) and theirs > 0:
                ratio = f"{mine / theirs:.2f}x"
            rows.append((f"{label}: vs {peer.spec.name}", fmt(mine, unit), target, fmt(theirs, unit), ratio))
    return rows


def main(args: argparse.Namespace) -> None:
    sizes = [("10 MB", 10 * MB)] if args.quick else [("10 MB", 10 * MB), ("100 MB", 100 * MB)]
    if args.full:
        sizes.append(("1 GB", 1000 * MB))
    cache = Path(args.cache_dir).expanduser()
    rng = random.Random()
    answer = f"the magic number is {rng.randrange(100_000, 1_000_000)}"
    needle = f"NEEDLE-{rng.getrandbits(32):08x}: {answer}"

    with tempfile.TemporaryDirectory(prefix="rlm-bench-peers-") as tmp_name:
        tmp = Path(tmp_name)
        data_dir = tmp / "data"
        data_dir.mkdir()
        block = log_block(random.Random(20240601), MB)
        loads: list[tuple[str, str, int, float, int]] = []  # label, path, bytes, seconds to wait, repeats
        for label, size in sizes:
            path = data_dir / f"log-{label.replace(' ', '').lower()}.txt"
            log(f"writing {label} of log-like text to {path}")
            write_log_file(path, size, block)
            cap, repeats = (300.0, 1) if size >= 1000 * MB else (120.0, 2 if args.quick else 3)
            loads.append((label, str(path), path.stat().st_size, cap, repeats))
        niah = data_dir / "niah.txt"
        write_niah_file(niah, 10 * MB, block, needle, 0.6)
        base = {
            "data_dir": str(data_dir),
            "loads": loads,
            "niah": {"path": str(niah), "answer": answer},
            "cold_repeats": 2 if args.quick else 3,
            "warmup": 3 if args.quick else 5,
            "calls": 20 if args.quick else 50,
        }
        driver_timeout = 1500.0 if args.full else 420.0
        servers = [measure_server(spec, cache, tmp, data_dir, base, driver_timeout) for spec in (OURS, *PEERS)]

    print_report("peer comparison", build_rows(servers[0], servers[1:], [(label, n) for label, _, _, _, n in loads]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="only the 10 MB file, fewer repeats")
    size.add_argument("--full", action="store_true", help="also load a 1 GB file")
    parser.add_argument("--cache-dir", default="~/.cache/rlm-mcp-bench", help="where peer venvs and logs live")
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.driver:
        import anyio

        anyio.run(driver_main, json.load(sys.stdin))
    else:
        main(parsed)
