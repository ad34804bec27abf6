"""rlm_map and llm_map: a map over every object of a remote source, run on a Ray cluster next to the data.

The worker sends {"op": "map", ...}; the server lists the source (under --allow-url), submits one task per
object to the cluster named by RLM_MCP_RAY_ADDRESS, and gathers the results as they finish, reporting
progress. Ray retries a task whose worker or node died (not one whose code raised: it would fail the same
way again); what still fails is reported in its place, never dropped. An llm_map's tasks only fill the
template with their object's text: the sub-calls are made here, through the session's router, so a fan-out
of any size stays within the session's one budget and the server's one concurrency limit.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import anyio
import anyio.abc
import anyio.lowlevel

from rlm_mcp.bridge import frames, ops
from rlm_mcp.cluster import pieces
from rlm_mcp.config import Settings
from rlm_mcp.contexts.remote import list_objects
from rlm_mcp.errors import ContextError, MapRefused, SubCallError
from rlm_mcp.escaping import printable
from rlm_mcp.sandbox.policy import PASSED_THROUGH
from rlm_mcp.session.services import OnDone, RequestContext, ServedSession
from rlm_mcp.units import MiB

log = logging.getLogger(__name__)

MAX_CODE_CHARS = 100_000
MAX_OBJECT_BYTES = 512 * MiB  # what one task reads of its object
MAX_REPLY_CHARS = 16 * MiB  # all of a map's results, as the worker receives them (and as the driver's frames)
MAX_PROMPTS_BYTES = 128 * MiB  # all of an llm_map's prompts, held here while its sub-calls are made
FRAME_SLACK = 64 * 1024  # a result's frame besides its value or prompt: its gaps, its note, the frame's fields
PER_OBJECT_BYTES = 8 * 1024  # what the driver may send for an object besides a kept result (its error)
MAX_HELD_BYTES = 128 * MiB  # what a function map's results may take here once parsed (held_estimate)
HELD_PER_ITEM = 64  # bytes one parsed JSON container or item takes here, about (an object and its slot)
MAX_ERROR_CHARS = 600
DRIVER_GRACE_S = 15.0  # past the map's deadline, for the driver to cancel what is left and say so
REAP_TIMEOUT_S = 5.0
READ_CHUNK = 1 << 20
PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])
# The driver's program (cluster/driver.py), where Ray is imported: run in its own process, never imported here.
DRIVER = (
    "import sys; sys.path.insert(0, sys.argv[1]); from rlm_mcp.cluster.driver import main; sys.exit(main(sys.argv[1:]))"
)


class RayCluster:
    """The server's side of one Ray cluster: a driver process (cluster/driver.py), started on the first map
    with no secret in its environment, and started again when it has died. Maps take turns on it.

    Ray runs only in the driver: the server never imports it, and never unpickles anything a map produced.
    What the driver says is hostile input: every frame is bounded (bridge/frames.py), every field checked, and a
    driver that breaks the protocol, dies, or overruns the map's time is killed, and the map fails in one
    line (at once, when the cluster's head does not answer; never in Ray's own words, which are logged). The
    sessions live on; the next map starts a fresh driver.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.loop = anyio.lowlevel.current_token()  # the driver's pipes belong to this event loop
        self._lock = anyio.Lock()
        self._process: anyio.abc.Process | None = None
        self._frames = _Frames()
        self._log: IO[bytes] | None = None
        self._received = 0  # bytes the driver sent for the map under way

    @property
    def pid(self) -> int | None:
        """The driver's process id while one runs (the tests kill it)."""
        return self._process.pid if self._process is not None and self._process.returncode is None else None

    async def run(
        self, kind: str, urls: list[str], arguments: list[Any], on_done: OnDone | None, deadline: float
    ) -> list[dict[str, Any]]:
        """One task per URL; results in order: {"ok": True, ...the task's fields} or {"ok": False, "error"}."""
        results: list[dict[str, Any]] = [{"ok": False, "error": "not run"} for _ in urls]
        with anyio.move_on_after(max(deadline - time.monotonic(), 0)) as waiting:
            await self._lock.acquire()
        if waiting.cancelled_caught:
            said = "stopped at the cell's time limit (another map held the cluster)"
            return [{"ok": False, "error": said} for _ in urls]
        try:
            await self._run_locked(kind, urls, arguments, on_done, deadline, results)
        finally:
            self._lock.release()
        return results

    async def _run_locked(
        self, kind: str, urls: list[str], arguments: list[Any], on_done: OnDone | None, deadline: float,
        results: list[dict[str, Any]],
    ) -> None:  # fmt: skip
        timeout = max(deadline - time.monotonic(), 0.0)
        ok = False
        try:
            if self.pid is None and not await anyio.to_thread.run_sync(reachable, self.address):
                raise MapRefused(self._unreachable())  # at once: a new driver would try to join for seconds
            process = await self._started()
            await process.stdin.send(frames.encode({
                "op": ops.MAP, "kind": kind, "urls": urls, "arguments": arguments, "timeout_s": timeout,
                "budget": reply_budget(kind),
            }))  # fmt: skip
            with anyio.fail_after(timeout + DRIVER_GRACE_S):
                await self._collect(kind, results, on_done)
            ok = True
        except TimeoutError:
            raise MapRefused(f"the Ray driver did not finish the map within {timeout + DRIVER_GRACE_S:.0f} s; "
                           "it was stopped, and the next map starts a new one") from None  # fmt: skip
        except (_DriverGone, frames.ProtocolError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise MapRefused(await self._lost(exc)) from None
        finally:
            if not ok:  # cancelled, timed out, or broken: a driver mid-map is of no further use
                with anyio.CancelScope(shield=True):
                    await self.stop()

    async def _collect(self, kind: str, results: list[dict[str, Any]], on_done: OnDone | None) -> None:
        """The driver's frames, until it says the map is done. What is kept is bounded as it arrives: the
        results (an llm_map's prompts) the reply budget takes, counted in their frames' bytes, and of a
        function map's, what MAX_HELD_BYTES takes once parsed (JSON's lists and dicts take up to some 24
        times their text); a result that would pass either is an error that says so, its value dropped."""
        seen: set[int] = set()
        self._received = kept = held = 0
        budget = reply_budget(kind)
        while True:
            frame, size, cost = await self._next_frame(largest_frame(kind), driver_bytes(kind, len(results)))
            if frame.get("op") == ops.DONE:
                error = frame.get("error")
                if error is not None and frame.get("lost") in ("join", "map"):  # Ray failed: its words are logged
                    raise _DriverGone(f"Ray failed ({printable(str(error), 80)})", joining=frame["lost"] == "join")
                if error is not None:
                    raise MapRefused(printable(str(error), MAX_ERROR_CHARS))
                return
            index = frame.get("index")
            if (
                frame.get("op") != ops.RESULT
                or type(index) is not int
                or not 0 <= index < len(results)
                or index in seen
            ):
                raise _DriverGone("the Ray driver sent a malformed frame")
            seen.add(index)
            result = checked_result(kind, frame.get("result"))
            del frame
            if result["ok"] and kept + size > budget:
                result = {"ok": False, "error": pieces.left_out(kind, budget)}
            elif result["ok"] and kind == "function" and held + cost > MAX_HELD_BYTES:
                result = {"ok": False, "error": f"left out: the map's results would take over {MAX_HELD_BYTES:,} "
                          "bytes of the server's memory (lists and dicts take many times their text); return less "
                          "per object"}  # fmt: skip
            elif result["ok"]:
                kept, held = kept + size, held + cost
            results[index] = result
            if on_done is not None:
                await on_done(len(seen), len(results))

    async def _started(self) -> anyio.abc.Process:
        if self._process is not None and self._process.returncode is None:
            return self._process
        await self.stop()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in _stop) the driver's stderr, for its tail
        self._frames = _Frames()
        self._process = await anyio.open_process(
            [sys.executable, "-c", DRIVER, PACKAGE_PARENT, self.address],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, cwd="/",
            env=driver_environment(), start_new_session=True,
        )  # fmt: skip
        return self._process

    async def _next_frame(self, largest: int, total: int) -> tuple[dict[str, Any], int, int]:
        """The driver's next frame, its size in bytes and its held_estimate. A frame is refused before its
        bytes are kept if it announces over `largest` bytes, and the map's frames over `total` bytes in all."""
        process = self._process
        assert process is not None and process.stdout is not None
        while True:
            announced = self._frames.announced()
            if announced is not None and announced > largest:
                raise _DriverGone(f"the Ray driver sent a {announced:,}-byte frame, over a result's {largest:,}")
            payload = self._frames.next_payload()
            if payload is not None:
                try:
                    return frames.decode(payload), len(payload), held_estimate(payload)
                except RecursionError:
                    raise frames.ProtocolError("a frame nested too deep") from None
            try:
                chunk = await process.stdout.receive(READ_CHUNK)
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                raise _DriverGone("") from None
            self._received += len(chunk)
            if self._received > total:
                raise _DriverGone(f"the Ray driver sent over {total:,} bytes for one map")
            self._frames.feed(chunk)

    async def _lost(self, exc: BaseException) -> str:
        """What the model reads of a map the connection to the cluster failed: whether the cluster is there
        (so whether the next map can do better), never Ray's own words, which go to the server's log."""
        said = str(exc) or "the Ray driver exited"
        log.warning("Ray map at %s failed: %s; the driver's log ends: %s", self.address, said, self._log_tail())
        if not await anyio.to_thread.run_sync(reachable, self.address):
            return self._unreachable()
        if isinstance(exc, _DriverGone) and exc.joining:  # the head answers, yet Ray cannot join it
            return (
                f"the server cannot join the Ray cluster at {self.address} (the server's log says why); maps fail "
                "until that is fixed; your variables are kept"
            )
        return f"{printable(said, 200)}: this map failed; the next one starts a new connection"

    def _unreachable(self) -> str:
        return (
            f"the Ray cluster at {self.address} cannot be reached (stopped?); maps fail until it is back; "
            "your variables are kept"
        )

    def _log_tail(self) -> str:
        """The end of the driver's stderr (Ray's own words), for the server's log."""
        if self._log is None:
            return ""
        with contextlib.suppress(OSError):
            self._log.seek(0, os.SEEK_END)
            self._log.seek(max(self._log.tell() - 4096, 0))
            return printable(self._log.read().decode("utf-8", "replace").strip(), 4096)
        return ""

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with anyio.move_on_after(REAP_TIMEOUT_S):
                await process.wait()
            with contextlib.suppress(Exception):
                await process.aclose()
        if self._log is not None:
            self._log.close()
            self._log = None

    def abandon(self) -> None:
        """Kill the driver without waiting (its event loop is gone: a test's, or the server's at exit)."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


class _Frames:
    """The driver's stream cut into frames' payloads (bridge/frames.py's format), whose announced length can be
    checked before their bytes are kept."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._buffer.extend(chunk)

    def announced(self) -> int | None:
        """The length the next frame announces, once its header is here."""
        if len(self._buffer) < frames.HEADER.size:
            return None
        return frames.check_length(frames.HEADER.unpack_from(self._buffer)[0])

    def next_payload(self) -> bytes | None:
        length = self.announced()
        if length is None or len(self._buffer) < frames.HEADER.size + length:
            return None
        payload = bytes(self._buffer[frames.HEADER.size : frames.HEADER.size + length])
        del self._buffer[: frames.HEADER.size + length]
        return payload


def held_estimate(payload: bytes) -> int:
    """About what a frame's JSON takes once parsed: its bytes, and HELD_PER_ITEM for each container and
    item (each '{', '[' and ',': those inside strings too, so a string full of them is counted high)."""
    return len(payload) + HELD_PER_ITEM * (payload.count(b"{") + payload.count(b"[") + payload.count(b","))


def reply_budget(kind: str) -> int:
    """The bytes of result frames a map keeps (the driver is told, and the server holds it to them)."""
    return MAX_PROMPTS_BYTES if kind == "llm" else MAX_REPLY_CHARS


def largest_frame(kind: str) -> int:
    """The largest frame an honest driver sends for one object: its value (or prompt, each character at most
    6 bytes as JSON) and the rest of its fields."""
    return (6 * pieces.MAX_PROMPT_CHARS if kind == "llm" else pieces.MAX_RESULT_CHARS) + FRAME_SLACK


def driver_bytes(kind: str, objects: int) -> int:
    """All an honest driver sends for one map: the results the budget keeps, the others' errors, its end."""
    return reply_budget(kind) + objects * PER_OBJECT_BYTES + FRAME_SLACK


class _DriverGone(Exception):
    """The driver exited or broke the protocol, or Ray failed under it; the message says how (empty: it
    exited). `joining`: Ray failed to join the cluster."""

    def __init__(self, message: str, joining: bool = False) -> None:
        super().__init__(message)
        self.joining = joining


def reachable(address: str, timeout: float = 2.0) -> bool:
    """Whether the cluster's head answers on its port (host:port, or ray://host:port); True when the address
    says no port to try. Blocking."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit() or not host:
        return True
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def checked_result(kind: str, result: Any) -> dict[str, Any]:
    """One task's result as the driver sent it, checked as hostile: only the fields a map uses, each typed
    and bounded; anything else is that object's error."""
    if not isinstance(result, dict) or not isinstance(result.get("ok"), bool):
        return _malformed()
    if not result["ok"]:
        error = result.get("error")
        said = error if isinstance(error, str) else "the task failed"
        return {"ok": False, "error": printable(said, MAX_ERROR_CHARS)}
    if kind == "llm":
        prompt = result.get("prompt")
        if not isinstance(prompt, str) or len(prompt) > pieces.MAX_PROMPT_CHARS:
            return _malformed()
        return {"ok": True, "prompt": prompt}
    if "value" not in result or len(json.dumps(result["value"])) > pieces.MAX_RESULT_CHARS:
        return _malformed()
    gaps = result.get("gaps")
    if not isinstance(gaps, list) or len(gaps) > pieces.MAX_GAPS or not all(isinstance(gap, str) for gap in gaps):
        gaps = []
    checked = {"ok": True, "value": result["value"], "gaps": [printable(gap, MAX_ERROR_CHARS) for gap in gaps]}
    if isinstance(result.get("note"), str):  # a value that was not JSON: kept as its repr, and said so
        checked["note"] = printable(result["note"], 200)
    return checked


def _malformed() -> dict[str, Any]:
    return {"ok": False, "error": "the task answered something other than its fields"}


def driver_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The driver's variables: an allow-list (as the REPL worker's) and Ray's own RAY_* settings; never a key."""
    environ = os.environ if environ is None else environ
    env = {name: environ[name] for name in (*PASSED_THROUGH, "HOME", "TMPDIR") if name in environ}
    env.update({name: value for name, value in environ.items() if name.startswith("RAY_")})
    env.setdefault("PATH", os.defpath)
    env.update(PYTHONIOENCODING="utf-8", PYTHONDONTWRITEBYTECODE="1")
    return env


def _bounded(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results within MAX_REPLY_CHARS in all (the frame back to the worker is bounded too): past it, each
    further one is an error that says so."""
    used = 0
    for index, result in enumerate(results):
        used += len(json.dumps(result, default=str))
        if used > MAX_REPLY_CHARS:
            results[index] = {"path": result.get("path"), "ok": False, "error": "left out: the map's results "
                              f"passed {MAX_REPLY_CHARS:,} characters; return less per object"}  # fmt: skip
    return results


def sandbox_limits(settings: Settings, deadline: float) -> dict[str, Any]:
    """What the node's locked-down child is held to: the REPL worker's mode and limits, the map's time."""
    return {
        "mode": settings.sandbox,
        "memory_bytes": settings.memory_limit_mb * MiB,
        "write_bytes": min(settings.write_limit_mb, settings.disk_limit_mb) * MiB,
        "timeout_s": max(min(deadline - time.monotonic(), pieces.FUNCTION_TIMEOUT_S), 1.0),
    }


def _gaps_of(results: list[dict[str, Any]]) -> str | None:
    """The lockdown layers some node could not apply, once each, for the model to read."""
    gaps = sorted({gap for result in results for gap in result.pop("gaps", None) or []})
    return printable("; ".join(gaps), 2_000) if gaps else None


_clusters: dict[str, RayCluster] = {}


def cluster_for(settings: Settings) -> RayCluster:
    if not settings.ray_address:
        raise MapRefused(
            "rlm_map and llm_map run on a Ray cluster: start the server with RLM_MCP_RAY_ADDRESS=host:port; "
            "without one, load_context the data and loop over it in the REPL"
        )
    cluster = _clusters.get(settings.ray_address)
    if cluster is None or cluster.loop != anyio.lowlevel.current_token():
        if cluster is not None:
            cluster.abandon()
        cluster = _clusters[settings.ray_address] = RayCluster(settings.ray_address)
    return cluster


def list_source(source: str, settings: Settings) -> list[str]:
    """The URLs of every object of an allowed source (a glob, a directory or one object), in order, each in
    the one spelling it is checked and read in; nothing outside the allowed prefixes is requested to list
    it (remote.list_objects, the listing load_context uses too)."""
    return list_objects(source, settings.allow_url, settings.dir_max_files)


async def serve_map(session: ServedSession, frame: dict[str, Any], context: RequestContext) -> dict[str, Any]:
    """The reply to a worker's {"op": "map", "kind": "function"|"llm", "source": URL, ...}."""
    on_done, deadline = context.on_done, context.deadline
    kind, source = frame.get("kind"), frame.get("source")
    if kind not in ("function", "llm") or not isinstance(source, str):
        return {"ok": False, "error": "malformed map request from the worker"}
    try:
        cluster = cluster_for(session.settings)
        urls = await anyio.to_thread.run_sync(list_source, source, session.settings)
        if not math.isfinite(deadline):
            deadline = time.monotonic() + session.settings.max_timeout_s
        if kind == "function":
            code, name = frame.get("code"), frame.get("name")
            if (
                not isinstance(code, str)
                or len(code) > MAX_CODE_CHARS
                or not isinstance(name, str)
                or not name.isidentifier()
            ):
                return {"ok": False, "error": "rlm_map needs a function defined with def (its source is sent)"}
            limits = sandbox_limits(session.settings, deadline)
            results = await cluster.run("function", urls, [code, name, MAX_OBJECT_BYTES, limits], on_done, deadline)
            gaps = _gaps_of(results)
            paired = _bounded([{"path": url, **r} for url, r in zip(urls, results, strict=True)])
            return {"ok": True, "results": paired, "sandbox": gaps} if gaps else {"ok": True, "results": paired}
        template = frame.get("template")
        if not isinstance(template, str) or "{text}" not in template or len(template) > MAX_CODE_CHARS:
            return {"ok": False, "error": "llm_map needs a template str holding {text} (and optionally {path})"}
        prompts = await cluster.run("llm", urls, [template, MAX_OBJECT_BYTES], None, deadline)
        return await _ask_each(session, frame, urls, prompts, context.client_session, on_done)
    except (MapRefused, ContextError) as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # the worker waits for a reply: it must get one, whatever failed here
        log.exception("session %s: a map failed", session.id)
        return {"ok": False, "error": f"the map failed ({type(exc).__name__}: {printable(str(exc), 300)})"}


async def _ask_each(
    session: ServedSession, frame: dict[str, Any], urls: list[str], prompts: list[dict[str, Any]], client_session: Any,
    on_done: OnDone | None,
) -> dict[str, Any]:  # fmt: skip
    """The sub-calls of an llm_map, made here: one budget, one concurrency limit, whatever the fan-out."""
    model = frame.get("model") if isinstance(frame.get("model"), str) else None
    max_tokens = frame.get("max_tokens") if isinstance(frame.get("max_tokens"), int) else None
    ready = [index for index, item in enumerate(prompts) if item.get("ok") and isinstance(item.get("prompt"), str)]
    specs = [{"prompt": prompts[i]["prompt"], "system": None, "model": model, "max_tokens": max_tokens} for i in ready]
    try:
        answers = await session.llm.batch(specs, client_session, on_done, confirm=frame.get("confirm") is True)
    except SubCallError as exc:
        return {"ok": False, "error": str(exc), "kind": exc.kind}
    results = [{"path": url, "ok": False, "error": prompts[i].get("error", "")} for i, url in enumerate(urls)]
    for index, answer in zip(ready, answers, strict=True):
        results[index] = {"path": urls[index], **answer}
    return {"ok": True, "results": results}
