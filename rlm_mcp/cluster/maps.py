"""rlm_map and llm_map: a map over every object of a remote source, run on a Ray cluster next to the data.

The worker sends {"op": "map", ...}; the server lists the source (under --allow-url), submits one task per
object to the cluster named by RLM_MCP_RAY_ADDRESS, and gathers the results as they finish, reporting
progress. Ray retries a task that fails (its worker died, or the code raised) up to MAP_RETRIES times; what
still fails is reported in its place, never dropped. An llm_map's tasks only fill the template with their
object's text: the sub-calls are made here, through the session's router, so a fan-out of any size stays
within the session's one budget and the server's one concurrency limit.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio

from rlm_mcp.cluster import pieces
from rlm_mcp.config import Settings
from rlm_mcp.contexts.paths import ContextError, has_glob
from rlm_mcp.contexts.remote import MAX_LISTING_DEPTH, check_allowed, filesystem_for, scheme_of
from rlm_mcp.escaping import printable
from rlm_mcp.llm.types import SubCallError
from rlm_mcp.units import MiB

if TYPE_CHECKING:
    from rlm_mcp.session.session import Session

log = logging.getLogger(__name__)

MAP_RETRIES = 2
WAIT_S = 0.5
MAX_CODE_CHARS = 100_000
MAX_OBJECT_BYTES = 512 * MiB  # what one task reads of its object
MAX_REPLY_CHARS = 16 * MiB  # all of a map's results, as the worker receives them
OnDone = Callable[[int, int], Awaitable[None]]


class MapError(Exception):
    """A map that cannot run at all; the message says what to set or change."""


class RayCluster:
    """The server's connection to one Ray cluster, made on the first map (in a thread: it blocks)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._lock = anyio.Lock()
        self._ray: Any = None

    async def ray(self) -> Any:
        async with self._lock:
            if self._ray is None:
                self._ray = await anyio.to_thread.run_sync(self._connect)
        return self._ray

    def _connect(self) -> Any:
        try:
            import ray
        except ImportError:
            raise MapError(
                "rlm_map and llm_map need `pip install 'rlm-mcp[ray]'` in the server's environment"
            ) from None
        try:  # a driver joining a running cluster: it starts no processes here and writes nothing to stdout
            ray.init(address=self.address, log_to_driver=False, configure_logging=False, ignore_reinit_error=True)
        except Exception as exc:
            raise MapError(f"cannot reach the Ray cluster at {self.address} (RLM_MCP_RAY_ADDRESS): {exc}") from None
        return ray

    async def run(
        self, function: Callable[..., dict[str, Any]], urls: list[str], arguments: tuple[Any, ...],
        on_done: OnDone | None, deadline: float,
    ) -> list[dict[str, Any]]:  # fmt: skip
        """One task per URL; results in order: {"ok": True, ...the task's fields} or {"ok": False, "error"}."""
        ray = await self.ray()
        remote = ray.remote(max_retries=MAP_RETRIES, retry_exceptions=True)(function)
        refs = [remote.remote(url, *arguments) for url in urls]
        position = {ref: index for index, ref in enumerate(refs)}
        results: list[dict[str, Any]] = [{"ok": False, "error": "not run"} for _ in urls]
        try:
            await self._gather(ray, list(refs), position, results, on_done, deadline, len(urls))
        finally:  # the cell stopped, or the call was cancelled: what is left on the cluster stops too
            for ref in refs:
                if results[position[ref]].get("error") == "not run":
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
        return results

    async def _gather(
        self, ray: Any, pending: list[Any], position: dict[Any, int], results: list[dict[str, Any]],
        on_done: OnDone | None, deadline: float, total: int,
    ) -> int:  # fmt: skip
        done = 0
        while pending:
            if time.monotonic() >= deadline:
                for ref in pending:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
                    results[position[ref]] = {"ok": False, "error": "stopped at the cell's time limit"}
                break
            ready, pending = await anyio.to_thread.run_sync(_wait, ray, pending)
            for ref in ready:
                try:
                    got = await anyio.to_thread.run_sync(ray.get, ref)
                    results[position[ref]] = {"ok": True, **got} if isinstance(got, dict) else _malformed()
                except Exception as exc:  # after its retries: the task's own error, said in its place
                    results[position[ref]] = {"ok": False, "error": _error_of(exc)}
                done += 1
            if ready and on_done is not None:
                await on_done(done, total)
        return done


def _malformed() -> dict[str, Any]:
    return {"ok": False, "error": "the task answered something other than its fields"}


def _wait(ray: Any, pending: list[Any]) -> tuple[list[Any], list[Any]]:
    return ray.wait(pending, num_returns=len(pending), timeout=WAIT_S)


def _bounded(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results within MAX_REPLY_CHARS in all (the frame back to the worker is bounded too): past it, each
    further one is an error that says so."""
    import json

    used = 0
    for index, result in enumerate(results):
        used += len(json.dumps(result, default=str))
        if used > MAX_REPLY_CHARS:
            results[index] = {"path": result.get("path"), "ok": False, "error": "left out: the map's results "
                              f"passed {MAX_REPLY_CHARS:,} characters; return less per object"}  # fmt: skip
    return results


def _error_of(exc: Exception) -> str:
    cause = getattr(exc, "cause", None) or exc
    return printable(f"{type(cause).__name__}: {cause}", 500) + f" (after {MAP_RETRIES} retries)"


_clusters: dict[str, RayCluster] = {}


def cluster_for(settings: Settings) -> RayCluster:
    if not settings.ray_address:
        raise MapError(
            "rlm_map and llm_map run on a Ray cluster: start the server with RLM_MCP_RAY_ADDRESS=host:port; "
            "without one, load_context the data and loop over it in the REPL"
        )
    return _clusters.setdefault(settings.ray_address, RayCluster(settings.ray_address))


def list_source(source: str, settings: Settings) -> list[str]:
    """The URLs of every object of an allowed source (a glob, a directory or one object), in order."""
    check_allowed(source, settings.allow_url)
    filesystem, path = filesystem_for(source)
    if has_glob(path):
        found = filesystem.glob(path, detail=True, maxdepth=MAX_LISTING_DEPTH)
    elif filesystem.isdir(path):
        found = filesystem.glob(path.rstrip("/") + "/**", detail=True, maxdepth=MAX_LISTING_DEPTH)
    else:
        found = {path: {"type": "file"}}
    names = sorted(name for name, info in found.items() if info.get("type") == "file")
    if len(names) > settings.dir_max_files:
        raise ContextError(
            f"{source!r} holds {len(names):,} objects, over --dir-max-files ({settings.dir_max_files:,}); "
            "narrow the glob"
        )
    protocol = scheme_of(source) or ""
    urls = []
    for name in names:  # a listing is the store's (for HTTP, a page's links): each one checked again
        url = name if "://" in name else f"{protocol}://{name}"
        try:
            check_allowed(url, settings.allow_url)
        except ContextError:
            continue
        urls.append(url)
    if not urls:
        raise ContextError(f"{source!r} holds no objects (under the allowed URLs)")
    return urls


async def serve_map(
    session: Session, frame: dict[str, Any], client_session: Any, on_done: OnDone | None, deadline: float
) -> dict[str, Any]:
    """The reply to a worker's {"op": "map", "kind": "function"|"llm", "source": URL, ...}."""
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
            results = await cluster.run(pieces.run_function, urls, (code, name, MAX_OBJECT_BYTES), on_done, deadline)
            return {"ok": True, "results": _bounded([{"path": url, **r} for url, r in zip(urls, results, strict=True)])}
        template = frame.get("template")
        if not isinstance(template, str) or "{text}" not in template or len(template) > MAX_CODE_CHARS:
            return {"ok": False, "error": "llm_map needs a template str holding {text} (and optionally {path})"}
        prompts = await cluster.run(pieces.make_prompt, urls, (template, MAX_OBJECT_BYTES), None, deadline)
        return await _ask_each(session, frame, urls, prompts, client_session, on_done)
    except (MapError, ContextError) as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # the worker waits for a reply: it must get one, whatever failed here
        log.exception("session %s: a map failed", session.id)
        return {"ok": False, "error": f"the map failed ({type(exc).__name__}: {printable(str(exc), 300)})"}


async def _ask_each(
    session: Session, frame: dict[str, Any], urls: list[str], prompts: list[dict[str, Any]], client_session: Any,
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
