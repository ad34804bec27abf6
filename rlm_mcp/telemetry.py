"""OpenTelemetry export of the trace: a span per tool call, cell, sub-call, root turn and child RLM.

Off unless the operator configures an OTLP endpoint the standard way (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, with the extra `rlm-mcp[otel]`); then every event the trace records
(trace.py) becomes a span when it ends, sent over OTLP/HTTP in batches. Events end children first, so
spans are made after the fact, with their recorded start and duration, and with span ids derived from the
session and event ids: a child names its parent's id before the parent's span exists, and the tree arrives
whole. Attributes follow the GenAI semantic conventions (gen_ai.operation.name, gen_ai.request.model,
gen_ai.usage.*) plus rlm.* ones; prompts, answers and code only with --otel-texts, since they hold pieces of
the user's data.

Without --otel-texts nothing a cell, an input or a model wrote leaves: a failed event's status carries only
its error's type (a traceback holds code lines and values of the data), names are exported only when they
look like names (a tool, "cell 3", a model id), and the session is a one-way tag (a session id resumes the
session: it is a credential, never exported, with or without the flag).
"""

from __future__ import annotations

import builtins
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
OPERATION = {"tool": "execute_tool", "cell": "execute_code", "sub_call": "chat", "root_call": "chat",
             "rlm": "invoke_agent", "distill": "chat"}  # fmt: skip
TEXT_FIELDS = {"code": "rlm.code", "prompt": "gen_ai.prompt", "answer": "gen_ai.completion", "stdout": "rlm.stdout"}
TEXT_CHARS = 4_000
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/@\[\]-]{0,127}")  # a tool, "cell 3", a model id: never free text
ERROR_TYPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,99}")
HIDDEN_NAME = "(name not shown)"
HIDDEN_MODEL = "(model not shown)"
# Error types a cell's status may name: Python's own, and the REPL's. Code can make a class of any name
# (`type('Leak_' + secret, (Exception,), {})`), so any other name is data and is said as OTHER_ERROR.
PYTHON_ERRORS = frozenset(
    name for name, value in vars(builtins).items() if isinstance(value, type) and issubclass(value, BaseException)
)
REPL_ERRORS = frozenset({"LLMError", "MapError", "MemoryUnavailableError", "WorkerKilled", "WorkerCrashed"})
OTHER_ERROR = "Error"
KnownModel = Callable[[str], bool]


def configured() -> bool:
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def session_tag(session: str) -> str:
    """The session as spans name it: stable, so its spans group, and one-way (the id resumes the session)."""
    return hashlib.sha256(f"rlm-mcp session tag\0{session}".encode()).hexdigest()[:24]


def error_type(fields: dict[str, Any]) -> str:
    """What a failed event's status may say without --otel-texts: the error's type, never its text, and only
    a type Python or the REPL defines (the code names its own classes). A cell's error is Python's
    `Type: message` (a SyntaxError's is preceded by the indented code it points at); a sub-call's has a kind,
    which the server chose; anything else says how the event ended."""
    kind = fields.get("kind")
    if fields.get("type") == "sub_call" and isinstance(kind, str) and ERROR_TYPE.fullmatch(kind):
        return kind
    value = fields.get("error_type")
    if not isinstance(value, str):
        lines = str(fields.get("error") or "").splitlines()
        headers = [index for index, line in enumerate(lines) if line == "Traceback (most recent call last):"]
        first = next((line for line in lines[headers[-1] + 1 if headers else 0 :] if line[:1].strip()), "")
        found = ERROR_TYPE.match(first)
        value = found.group() if found and first[found.end() : found.end() + 1] in (":", "") else None
    if isinstance(value, str):
        return value if value.rsplit(".", 1)[-1] in PYTHON_ERRORS | REPL_ERRORS else OTHER_ERROR
    outcome = fields.get("outcome")
    return outcome if isinstance(outcome, str) and ERROR_TYPE.fullmatch(outcome) else "error"


def shown_model(value: Any, texts: bool, known: KnownModel) -> str:
    """A model's name as exported: REPL code chooses the model it asks for (`model='claude-' + secret`), so
    without texts only an id `known` vouches for (the price table's families) is named."""
    name = str(value)
    if texts:
        return name[:TEXT_CHARS]
    return name if known(name) else HIDDEN_MODEL


def shown_name(value: Any, texts: bool) -> str:
    """An event's name or a model's, as exported: names only, unless texts are exported anyway."""
    name = str(value)
    if texts:
        return name[:TEXT_CHARS]
    return name if NAME.fullmatch(name) else HIDDEN_NAME


def _id(session: str, event: int, bits: int) -> int:
    digest = hashlib.sha256(f"rlm-mcp\0{session}\0{event}".encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1


class _PlannedIds:
    """An IdGenerator that hands out the span id chosen for the span being made (thread-local)."""

    def __init__(self) -> None:
        self.next = threading.local()

    def generate_span_id(self) -> int:
        return int(getattr(self.next, "span", 0)) or _id("random", id(self), 64)

    def generate_trace_id(self) -> int:
        return int(getattr(self.next, "trace", 0)) or _id("random-trace", id(self), 128)

    def is_trace_id_random(self) -> bool:  # derived from the session id, not random (the W3C flag says so)
        return False


class Exporter:
    def __init__(self, texts: bool, known_model: KnownModel) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from rlm_mcp import __version__

        self.texts = texts
        self.known_model = known_model
        self.ids = _PlannedIds()
        resource = Resource.create({"service.name": "rlm-mcp", "service.version": __version__})
        self.provider = TracerProvider(resource=resource, id_generator=self.ids)  # type: ignore[arg-type]
        self.provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        self.tracer = self.provider.get_tracer("rlm-mcp", __version__)
        self._lock = threading.Lock()

    def export(self, session: str, fields: dict[str, Any]) -> None:
        """One finished trace event as a span (its parent's span id derived, not looked up)."""
        from opentelemetry import trace
        from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

        event, parent = fields.get("id"), fields.get("parent")
        if not isinstance(event, int):
            return
        trace_id = _id(session, 0, 128)
        context = None
        if isinstance(parent, int):
            parent_context = SpanContext(trace_id, _id(session, parent, 64), False, TraceFlags(TraceFlags.SAMPLED))
            context = trace.set_span_in_context(NonRecordingSpan(parent_context))
        started = float(fields.get("started") or 0.0)
        elapsed = float(fields.get("elapsed_s") or 0.0)
        kind = str(fields.get("type"))
        with self._lock:  # the planned ids are per thread, the lock keeps them with their span
            self.ids.next.trace, self.ids.next.span = trace_id, _id(session, event, 64)
            span = self.tracer.start_span(
                f"{OPERATION.get(kind, kind)} {self._name(kind, fields)}",
                context=context,
                start_time=int(started * 1e9),
                attributes=self._attributes(session, kind, fields),
            )
            self.ids.next.trace = self.ids.next.span = 0
        if fields.get("error"):
            span.set_status(Status(StatusCode.ERROR, str(fields["error"])[:500] if self.texts else error_type(fields)))
        span.end(end_time=int((started + elapsed) * 1e9))

    def _name(self, kind: str, fields: dict[str, Any]) -> str:
        """A sub-call's or root turn's name is its model's."""
        if kind in ("sub_call", "root_call"):
            return shown_model(fields.get("name"), self.texts, self.known_model)
        return shown_name(fields.get("name"), self.texts)

    def _attributes(self, session: str, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
        name = self._name(kind, fields)
        attributes: dict[str, Any] = {"gen_ai.operation.name": OPERATION.get(kind, kind), "rlm.event": kind,
                                      "rlm.session": session_tag(session), "rlm.name": name}  # fmt: skip
        if kind in ("sub_call", "root_call"):
            for key, names in (("model", ("gen_ai.request.model",)),
                               ("backend", ("gen_ai.provider.name", "gen_ai.system"))):  # fmt: skip
                if isinstance(fields.get(key), str):
                    shown = (
                        shown_model(fields[key], self.texts, self.known_model)
                        if key == "model"
                        else shown_name(fields[key], self.texts)
                    )
                    attributes.update(dict.fromkeys(names, shown))
            for key in ("input_tokens", "output_tokens"):
                if isinstance(fields.get(key), int):
                    attributes[f"gen_ai.usage.{key}"] = fields[key]
        for key in ("outcome", "cost_usd", "attempts", "cached", "level", "iterations", "state"):
            value = fields.get(key)
            if isinstance(value, str):
                attributes[f"rlm.{key}"] = shown_name(value, self.texts)
            elif isinstance(value, (int, float, bool)):
                attributes[f"rlm.{key}"] = value
        if kind == "cell":
            attributes["rlm.cell"] = name
        if self.texts:
            for key, name in TEXT_FIELDS.items():
                if isinstance(fields.get(key), str):
                    attributes[name] = fields[key][:TEXT_CHARS]
        return attributes

    def shutdown(self) -> None:
        self.provider.shutdown()  # flushes what is batched


_exporter: Exporter | None = None
_tried = False
_guard = threading.Lock()


def exporter(texts: bool = False, known_model: KnownModel = lambda _: False) -> Exporter | None:
    """The process's exporter if OTLP is configured (made once); None otherwise, or without the extra.
    `known_model` says which model ids may be named without texts (given by the server: this module sits
    below the sub-model backends)."""
    global _exporter, _tried
    with _guard:
        if not _tried:
            _tried = True
            if configured():
                try:
                    _exporter = Exporter(texts, known_model)
                except ImportError:
                    log.warning("OTEL_EXPORTER_OTLP_* is set, but `pip install 'rlm-mcp[otel]'` is missing: no export")
        return _exporter


def active() -> Exporter | None:
    """The exporter set up by `exporter()`, if any: what the trace hands each finished event."""
    return _exporter


def shutdown() -> None:
    global _exporter, _tried
    with _guard:
        if _exporter is not None:
            _exporter.shutdown()
        _exporter, _tried = None, False
