"""The MCP surface: the tools (declared once in rlm_mcp/tools, registered here), prompt and resources, nothing else.

Each tool validates nothing itself and holds no state: it hands its arguments to the session and turns the
answer into a result: the text tools/render.py designs for the model, and with --structured-content the same
data as structuredContent too (see _result). Descriptions are read by the root model on every turn, so
they are short and exact. For the same reason the tools declare no outputSchema: the three schemas would
add about 2,500 characters to every tools/list; the data is documented in the README and tools/schemas.py.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from rlm_mcp import __version__, telemetry
from rlm_mcp.config import Settings
from rlm_mcp.engine.assembly import worker_services
from rlm_mcp.errors import UserError, WorkerStartError
from rlm_mcp.llm.pricing import is_known_model
from rlm_mcp.llm.types import Backend
from rlm_mcp.sandbox.policy import summary
from rlm_mcp.sandbox.prctl import make_undumpable
from rlm_mcp.session.registry import Resolved, SessionRegistry
from rlm_mcp.session.session import Session
from rlm_mcp.surface.tasks import Tasks, authorization, current_task
from rlm_mcp.tools.declarations import LOAD_CONTEXT, RUN_CODE, SUB_QUERY, ToolDeclaration
from rlm_mcp.tools.render import render_finished_earlier, render_load, render_run, render_sub_query
from rlm_mcp.tools.schemas import RunResult
from rlm_mcp.trace import read_tail_text
from rlm_mcp.units import MiB

log = logging.getLogger(__name__)

ToolHandler = Callable[..., Awaitable[CallToolResult]]
TRACE_RESOURCE_MAX_BYTES = 32 * MiB  # the resource gives the trace's last whole lines within this

INSTRUCTIONS = """\
Use rlm-mcp instead of reading files yourself when an input is too big to read whole (a file over ~100 KB, \
many files, gigabytes of logs) or a question needs all of it read. The input stays in a \
persistent Python REPL, out of your context (Recursive Language Model method):
1. load_context(path=...) binds a file, directory or glob to a variable (default `context`); you see its size \
and a preview only.
2. run_code runs Python there; variables persist. Inspect first: len(), peek, grep, chunk, split, search \
(see rlm_help()). Print only what you need: long output is cut (all of it in `_out`).
3. Delegate reading in code: llm_query(prompt) -> str; llm_query_batched(prompts) -> list, concurrent (failures \
are LLMError objects); rlm_query(prompt, piece) -> str runs a child RLM with its own REPL.
4. Keep partial results in variables and combine them in code; show yourself only the answer."""
SANDBOXED = "\nSandboxed: no network or subprocesses, writes only in the working directory (resource rlm://sandbox)."
UNSANDBOXED = "\nThe REPL is not sandboxed (RLM_MCP_SANDBOX=off): code runs with the user's rights; be careful."

ANALYZE_PROMPT = """\
Answer this question about {path} without reading it into your context: {question}

Work the Recursive Language Model way, with the rlm tools:
1. load_context(path={path!r}); read only the size, kind and preview it returns.
2. In run_code, learn its shape before reading: len(), peek(), grep(pattern, context, count=True), and for a \
directory the file names (list(context)[:50]) and sizes.
3. Split it into pieces a sub-model can read (chunk(context, 50_000), split(context, "markdown"), or one file each) \
and ask about every piece in code: answers = llm_query_batched([f"...{{piece}}" for piece in pieces]). Keep the \
answers in variables; print only counts and short samples.
4. Combine them in code (counts, merged lists, or one llm_query over the partial answers), and check what you can \
against the text itself with grep.
5. Reply with the answer and how you found it: what you loaded, into how many pieces, what you checked."""

SESSION_HEADER = "x-rlm-session"  # a session named in the host's config: state without the model's help


def _result(
    model: BaseModel,
    text: str,
    resolved: Resolved,
    earlier: RunResult | None,
    is_error: bool = False,
    structured: bool = False,
) -> CallToolResult:
    """The designed text; the same data as structuredContent only when asked for (--structured-content).

    Why not both by default: a host that finds structuredContent shows the model its JSON and drops the
    text (Claude Code does), so the model would read field names, escapes and empty fields instead of the
    rendering; programs that want the data turn it on. `earlier`: a cell that finished after its call
    answered `running`, given with this one.
    """
    session = resolved.session
    if earlier is not None:
        text = render_finished_earlier(earlier) + text
    if resolved.minted:
        text = f"Session: {session.id} (pass session={session.id!r} in every later call)\n" + text
    data = None
    if structured:
        data = {**model.model_dump(mode="json"), "session": session.id}
        if earlier is not None:
            data["finished_cell"] = earlier.model_dump(mode="json")
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=data, is_error=is_error)


def _error(message: str, earlier: RunResult | None = None) -> CallToolResult:
    text = (render_finished_earlier(earlier) if earlier is not None else "") + message
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def build_server(settings: Settings, backend: Backend | None = None) -> MCPServer:
    """`backend`: one backend for every model call instead of the settings' choice (`rlm-mcp replay`)."""
    if not make_undumpable():
        log.warning("could not mark the server non-dumpable: REPL code may read its environment via /proc")
    _warn_about_reach(settings)
    telemetry.exporter(settings.otel_texts, is_known_model)  # OTLP export, if the operator configured one
    sessions = SessionRegistry(settings, services=worker_services(), backend=backend)
    tasks = Tasks()
    server = MCPServer(
        "rlm-mcp",
        version=__version__,
        instructions=INSTRUCTIONS + (UNSANDBOXED if settings.sandbox == "off" else SANDBOXED),
        lifespan=_lifespan(settings, sessions, tasks),
        log_level=settings.log_level,
        extensions=[tasks],
    )
    _register_tools(server, sessions, settings.structured_content)
    _register_prompts(server)
    _register_resources(server, settings, sessions)
    _register_session_parts(server, settings, sessions)
    if settings.transport != "http":
        _hide_session_argument(server)
    return server


def _warn_about_reach(settings: Settings) -> None:
    """The operator's flags that give model-written code more than the work needs are logged, not refused."""
    for root in settings.roots:
        if root == Path("/") or root == Path.home():
            log.warning(
                "root %s lets load_context and REPL code read everything under it (your keys and dotfiles too); "
                "pass --root with the directory the work needs",
                root,
            )
    if settings.sandbox == "off":
        log.warning("RLM_MCP_SANDBOX=off: model-written code runs with your user's full rights (files, network)")


def _lifespan(
    settings: Settings, sessions: SessionRegistry, tasks: Tasks
) -> Callable[[MCPServer], AbstractAsyncContextManager[None]]:
    """The server's lifetime: one task group that cells, tasks and the background chores run in, and on the
    way out every session closed."""

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            sessions.spawn = tasks.spawn = group.start_soon  # cells run here: they outlive the calls that start them
            group.start_soon(sessions.router.maintain)  # stops CLI processes started ahead of need, unused
            if settings.transport == "http":
                group.start_soon(_evict_idle_sessions, sessions, settings.idle_timeout_s)
                group.start_soon(sessions.router.prepare)
            else:
                group.start_soon(sessions.prepare_stdio)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                await sessions.close_all()

    return lifespan


def _resolve(sessions: SessionRegistry, ctx: Context, handle: str | None) -> Resolved:
    """The call's session: by its handle, else by the host's session header or the HTTP session."""
    headers = _headers(ctx) or {}
    name = headers.get(SESSION_HEADER)
    named = (authorization(headers), name) if name else None  # the one header BearerToken checked
    return sessions.resolve(handle, headers.get("mcp-session-id"), _client_address(ctx), named)


async def _serve(
    sessions: SessionRegistry,
    structured: bool,
    ctx: Context,
    handle: str | None,
    work: Callable[[Session], Awaitable[Any]],
    render: Callable[[Any], str],
    failed: Callable[[Any], bool] = lambda result: False,
    deliver_earlier: bool = True,
) -> CallToolResult:
    """Find the call's session, do the work in it and render the result; a refused call gets an error
    result and leaves no session behind that it made. A cell that finished in the background since the
    last call comes first (`deliver_earlier`; a call that waits for the cell gets it as its own result)."""
    resolved: Resolved | None = None
    earlier: RunResult | None = None
    try:
        resolved = _resolve(sessions, ctx, handle)
        earlier = resolved.session.take_finished() if deliver_earlier else None
        result = await work(resolved.session)
    except (UserError, WorkerStartError) as exc:
        if resolved is not None:
            await sessions.discard(resolved)
        return _error(str(exc), earlier)
    return _result(result, render(result), resolved, earlier, failed(result), structured)


def _register_tools(server: MCPServer, sessions: SessionRegistry, structured: bool) -> None:
    """The three tools; each handler gets its tool's declared signature (rlm_mcp/tools/declarations.py) and so
    every declared argument."""

    @_declared(server, LOAD_CONTEXT)
    async def load_context(ctx: Context, session: str | None, **arguments: Any) -> CallToolResult:
        return await _serve(
            sessions, structured, ctx, session, lambda target: target.load_context(**arguments), render_load
        )

    @_declared(server, RUN_CODE)
    async def run_code(ctx: Context, session: str | None, **arguments: Any) -> CallToolResult:
        task = current_task()  # a call the client follows as an MCP task has no wait_s: it polls instead
        return await _serve(
            sessions,
            structured,
            ctx,
            session,
            lambda target: target.run_code(
                arguments["code"],
                arguments["timeout_s"],
                client_session=_client_session(ctx),
                report=task.report if task else _progress_reporter(ctx),
                max_output_chars=arguments["max_output_chars"],
                wait_s=math.inf if task else arguments["wait_s"],
                interrupt=arguments["interrupt"],
                stop=task.cancel if task else _cancel_requested(ctx),
            ),
            render_run,
            failed=lambda result: result.outcome not in ("ok", "running"),
            deliver_earlier=False,  # the session puts a finished earlier cell in the result (finished_cell)
        )

    @_declared(server, SUB_QUERY)
    async def sub_query(ctx: Context, session: str | None, **arguments: Any) -> CallToolResult:
        return await _serve(
            sessions,
            structured,
            ctx,
            session,
            lambda target: target.sub_query(**arguments, client_session=_client_session(ctx)),
            render_sub_query,
        )


def _register_prompts(server: MCPServer) -> None:
    @server.prompt(
        name="analyze",
        title="Analyze a large input with rlm-mcp",
        description="Answer a question about a large file, directory or glob without reading it into context.",
    )
    def analyze(
        path: Annotated[str, Field(description=LOAD_CONTEXT.parameter("path").description)],
        question: Annotated[str, Field(description="What to find out")],
    ) -> str:
        return ANALYZE_PROMPT.format(path=path, question=question)


def _register_resources(server: MCPServer, settings: Settings, sessions: SessionRegistry) -> None:
    """The server-wide resources: the sandbox report and the workspace's handbook."""

    @server.resource(
        "rlm://sandbox",
        name="sandbox",
        description="Which lock-down layers hold for this session's REPL worker, and why any is missing.",
        mime_type="application/json",
    )
    async def sandbox_report() -> str:
        try:
            layers = await sessions.default().sandbox_layers()
        except WorkerStartError as exc:
            return json.dumps({"mode": settings.sandbox, "error": str(exc)})
        return json.dumps({"mode": settings.sandbox, "summary": summary(layers), "layers": layers})

    @server.resource(
        "rlm://handbook",
        name="handbook",
        description="This workspace's behavior handbook (distilled from earlier sessions, with use counts) and "
        "the sizes of its findings and sub-call answer cache.",
        mime_type="application/json",
    )
    async def handbook_listing() -> str:
        return json.dumps(await sessions.memory.listing())


def _register_session_parts(server: MCPServer, settings: Settings, sessions: SessionRegistry) -> None:
    """A session's trace, usage and info: rlm://session/{part} for the one session of stdio, and
    rlm://sessions/{session_id}/{part} for any session by its handle."""

    def current() -> Session:
        """Static resources get no request context: over HTTP, a client names its session in the URI."""
        if settings.transport == "http":
            raise UserError("over HTTP, read rlm://sessions/{session}/... with the `session` your results carry")
        return sessions.default()

    for part_name, description in PARTS.items():

        def reader(name: str = part_name) -> Any:
            async def read() -> str:
                return await _part(current(), name)

            return read

        server.resource(
            f"rlm://session/{part_name}", name=part_name, description=description, mime_type=MIME[part_name]
        )(reader())

    @server.resource(
        "rlm://sessions/{session_id}/{name}",
        name="session part",
        description="trace, usage or info of the session with this handle",
        mime_type="application/json",
    )
    async def session_part(session_id: str, name: str) -> str:
        if name not in PARTS:
            raise UserError(f"no part {name!r}; use one of {', '.join(PARTS)}")
        return await _part(sessions.resolve(session_id, None).session, name)


async def _part(session: Session, name: str) -> str:
    if name == "trace":
        return await anyio.to_thread.run_sync(read_tail_text, session.tracer.path, TRACE_RESOURCE_MAX_BYTES)
    if name == "usage":
        return json.dumps(session.usage())
    return json.dumps(await session.info())


def _declared(server: MCPServer, tool: ToolDeclaration) -> Callable[[ToolHandler], ToolHandler]:
    """Register a handler as `tool`, with the declared signature: the SDK reads the tool's input schema from
    its function's parameters, so the names, types, defaults and descriptions it publishes are the declared
    ones, and a call passes the handler every declared argument by keyword."""

    def register(handler: ToolHandler) -> ToolHandler:
        keyword = inspect.Parameter.KEYWORD_ONLY
        parameters = [inspect.Parameter("ctx", keyword, annotation=Context)] + [
            inspect.Parameter(
                parameter.name,
                keyword,
                default=inspect.Parameter.empty if parameter.required else parameter.default,
                annotation=Annotated[parameter.type, Field(description=parameter.description)],
            )
            for parameter in tool.parameters
        ]
        handler.__signature__ = inspect.Signature(parameters, return_annotation=CallToolResult)  # type: ignore[attr-defined]
        hints = ToolAnnotations(
            read_only_hint=tool.read_only, destructive_hint=tool.destructive, open_world_hint=tool.open_world
        )
        server.tool(name=tool.name, description=tool.description, structured_output=False, annotations=hints)(handler)
        return handler

    return register


def _hide_session_argument(server: MCPServer) -> None:
    """On stdio there is one session and the handle is not needed: leave `session` out of the schemas the
    model reads (a call that passes one, to resume a saved session, is still accepted)."""
    for tool in server._tool_manager.list_tools():  # the SDK has no public way to edit a registered schema
        tool.parameters.get("properties", {}).pop("session", None)


PARTS = {
    "trace": "This session's event tree as JSON Lines (tool calls, cells, sub-calls; schema v1 in rlm_mcp/trace.py).",
    "usage": "Sub-call usage and cost of this session, in total and per model.",
    "info": "This session's contexts, variables, budget left and sandbox layers.",
}
MIME = {"trace": "application/jsonl", "usage": "application/json", "info": "application/json"}


EVICTION_PERIOD_S = 15.0  # with UNUSED_SESSION_S: a session no call has used is gone within a minute


async def _evict_idle_sessions(sessions: SessionRegistry, idle_timeout_s: float) -> None:
    while True:
        await anyio.sleep(max(1.0, min(EVICTION_PERIOD_S, idle_timeout_s / 4)))
        for session_id in await sessions.evict_idle():
            log.info("closed idle session %s (its record is kept; a call with its handle resumes it)", session_id)


def _progress_reporter(ctx: Context) -> Any | None:
    """Progress goes to clients that asked for it (sent a progress token); for others there is nothing to do."""

    async def report(progress: float, message: str) -> None:
        await ctx.report_progress(progress, None, message)

    return report


def _cancel_requested(ctx: Context) -> anyio.Event | None:
    """Set when the client sends notifications/cancelled for this call (not when it merely goes away).

    The SDK keeps the event on the request's dispatch context, which the tool's context reaches only
    through the session's private `_request_outbound`; without it a cancel leaves the cell running."""
    try:
        dispatch = getattr(ctx.request_context.session, "_request_outbound", None)
    except (AttributeError, ValueError, RuntimeError):
        return None
    event = getattr(dispatch, "cancel_requested", None)
    return event if isinstance(event, anyio.Event) else None


def _headers(ctx: Context) -> Any | None:
    try:
        return ctx.headers
    except (AttributeError, ValueError, RuntimeError):
        return None


def _client_address(ctx: Context) -> str | None:
    """The HTTP client's address (None on stdio), for the cap on new sessions per client."""
    try:
        client = getattr(ctx.request_context.request, "client", None)
    except (AttributeError, ValueError, RuntimeError):
        return None
    return getattr(client, "host", None)


def _client_session(ctx: Context) -> Any | None:
    """The calling client's session, through which sampling requests go back to it (if it offers them)."""
    try:
        return ctx.session
    except (AttributeError, ValueError, RuntimeError):
        return None
