"""OpenTelemetry export: the spans an OTLP/HTTP receiver on 127.0.0.1 gets from a real session."""

from __future__ import annotations

import http.server
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from rlm_mcp import telemetry
from rlm_mcp.surface.server import build_server
from testkit.fakes import FakeProvider
from tests.conftest import load, make_settings, run

pytestmark = pytest.mark.anyio
trace_service = pytest.importorskip(
    "opentelemetry.proto.collector.trace.v1.trace_service_pb2", reason="the otel extra is not installed"
)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """An OTLP/HTTP traces endpoint: every span it is sent, decoded from protobuf."""
    spans: list[Any] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            request = trace_service.ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource in request.resource_spans:
                for scope in resource.scope_spans:
                    spans.extend(scope.spans)
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.end_headers()
            self.wfile.write(trace_service.ExportTraceServiceResponse().SerializeToString())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield spans
    finally:
        telemetry.shutdown()
        server.shutdown()
        server.server_close()


@pytest.fixture
async def provider(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeProvider]:
    async with FakeProvider.running(answer=lambda prompt, system, model: "an answer") as fake:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        yield fake


def attributes(span: Any) -> dict[str, Any]:
    found = {}
    for item in span.attributes:
        value = item.value
        found[item.key] = getattr(value, value.WhichOneof("value"))
    return found


async def session(tmp_path: Path, data_dir: Path, **overrides: Any) -> None:
    async with Client(build_server(make_settings(tmp_path, data_dir, **overrides))) as client:
        await load(client, text="the secret data", name="notes")
        await run(client, "a = llm_query('what is in ' + notes)")
        await run(client, "1 / 0")


async def test_a_session_arrives_as_one_span_tree_with_genai_attributes(
    receiver: list[Any], provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    await session(tmp_path, data_dir)
    by_id = {span.span_id: span for span in receiver}
    names = sorted(span.name for span in receiver)
    assert names == sorted(["execute_tool load_context", "execute_tool run_code", "execute_code cell 1",
                            "chat claude-haiku-4-5", "execute_tool run_code", "execute_code cell 2"])  # fmt: skip
    assert len({span.trace_id for span in receiver}) == 1  # one session, one trace
    (call,) = [span for span in receiver if span.name.startswith("chat")]
    cell = by_id[call.parent_span_id]
    tool = by_id[cell.parent_span_id]
    assert (cell.name, tool.name, tool.parent_span_id) == ("execute_code cell 1", "execute_tool run_code", b"")
    seen = attributes(call)
    assert seen["gen_ai.operation.name"] == "chat" and seen["gen_ai.request.model"] == "claude-haiku-4-5"
    assert seen["gen_ai.usage.input_tokens"] > 0 and seen["gen_ai.usage.output_tokens"] > 0
    assert seen["gen_ai.provider.name"] == seen["gen_ai.system"] == "anthropic" and seen["rlm.cost_usd"] > 0
    assert call.start_time_unix_nano >= cell.start_time_unix_nano and call.end_time_unix_nano <= cell.end_time_unix_nano
    failed = next(span for span in receiver if span.name == "execute_code cell 2")
    assert failed.status.code == failed.status.STATUS_CODE_ERROR and "ZeroDivisionError" in failed.status.message
    every_value = " ".join(str(value) for span in receiver for value in attributes(span).values())
    assert "secret data" not in every_value and "what is in" not in every_value  # texts only when asked for


async def test_texts_are_exported_only_when_the_user_opts_in(
    receiver: list[Any], provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    await session(tmp_path, data_dir, otel_texts=True)
    (call,) = [span for span in receiver if span.name.startswith("chat")]
    seen = attributes(call)
    assert seen["gen_ai.prompt"] == "what is in the secret data" and seen["gen_ai.completion"] == "an answer"
    cell = next(span for span in receiver if span.name == "execute_code cell 1")
    assert attributes(cell)["rlm.code"].startswith("a = llm_query(")


async def test_without_an_endpoint_nothing_is_exported(
    provider: FakeProvider, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    await session(tmp_path, data_dir)
    assert telemetry.active() is None


MARKER = "PRIVATE-MARKER-7f3a9c"  # a value only the loaded file holds


async def test_without_texts_no_data_from_a_cell_and_no_session_id_leave_in_any_span(
    receiver: list[Any], provider: FakeProvider, tmp_path: Path, data_dir: Path
) -> None:
    """Failing cells whose tracebacks hold a value of the loaded file (in the message and in a code line),
    and a sub-call whose prompt holds it: only the error's type is exported, and the session (a resume
    handle) only as a one-way tag."""
    async with Client(build_server(make_settings(tmp_path, data_dir))) as client:
        await load(client, text=f"name,value\nkey,{MARKER}\n", name="table")
        await run(client, "value = table.splitlines()[1].split(',')[1]\nraise ValueError('bad value ' + value)")
        await run(client, "assert 'nothing' in table, table")
        await run(client, f"exec(compile({MARKER!r} + ' + 1', 'cell', 'exec'))")  # the value in a code line
        await run(client, "answer = llm_query('summarise ' + table)")
        # names the code chooses: an exception class and a model, each carrying the value
        await run(client, "raise type('Leak_' + value, (Exception,), {})()")
        await run(client, "answer = llm_query('hi', model='claude-haiku-4-5-' + value)")
        await run(client, "answer = llm_query('hi', model='claude-haiku-4-5 ' + value)")
    session_ids = {path.parent.name for path in (tmp_path / "workspace").rglob("trace.jsonl")}
    assert session_ids and receiver
    errors = sorted(span.status.message for span in receiver if span.status.code == span.status.STATUS_CODE_ERROR)
    assert errors == ["AssertionError", "Error", "SyntaxError", "ValueError"], errors
    for span in receiver:  # its name, attributes, events, status and links, as sent
        sent = span.SerializeToString()
        assert MARKER.encode() not in sent, span
        assert not [session for session in session_ids if session.encode() in sent], span
    tags = {attributes(span)["rlm.session"] for span in receiver}
    assert len(tags) == 1 and len(next(iter(tags))) >= 16  # one session, one stable tag: its spans group
