"""The real Claude Code CLI as the MCP host, with a scripted root model on loopback.

The CLI launches rlm-mcp over stdio from an --mcp-config, exactly as a user's does, and talks to
ANTHROPIC_BASE_URL, where `ScriptedRoot` speaks the Anthropic Messages API (SSE when asked to stream). The
root model's turns are a script: the tool calls to make, in order, then a final answer. Every request the
host sends is recorded, so a test can assert on what the model was given: the system prompt (with the
server's instructions) and each tool result exactly as the host passed it on.

Requests that offer no tools are the host's own side calls (titles, summaries): they get a plain answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MODEL = "claude-sonnet-4-6"


@dataclass
class ScriptedRoot:
    """The root model: `calls` are (tool name, input) made one a turn, then `answer` ends the session."""

    calls: list[tuple[str, dict[str, Any]]]
    answer: str = "done"
    requests: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[Any] = field(default_factory=list)  # the content of each tool_result, in order

    def respond(self, body: dict[str, Any]) -> dict[str, Any]:
        """The assistant message for one request: the next scripted call, or the answer."""
        self.requests.append(body)
        if not body.get("tools"):
            return _message([{"type": "text", "text": "rlm-mcp session"}], "end_turn")
        self.tool_results = [
            block.get("content")
            for message in body["messages"]
            if message.get("role") == "user" and isinstance(message.get("content"), list)
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]  # the latest request holds them all
        # The host may merge consecutive turns into one message: count the calls made, not the messages.
        turn = sum(
            1
            for message in body["messages"]
            if message.get("role") == "assistant" and isinstance(message.get("content"), list)
            for block in message["content"]
            if isinstance(block, dict) and block.get("type") == "tool_use"
        )
        if turn < len(self.calls):
            name, arguments = self.calls[turn]
            block = {"type": "tool_use", "id": f"toolu_{turn:04d}", "name": name, "input": arguments}
            return _message([block], "tool_use")
        return _message([{"type": "text", "text": self.answer}], "end_turn")


def _message(content: list[dict[str, Any]], stop_reason: str) -> dict[str, Any]:
    return {
        "id": "msg_scripted",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 100, "output_tokens": 10},
    }


def _sse(message: dict[str, Any]) -> bytes:
    """A message as the Messages API streams it."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {**message, "content": [], "stop_reason": None}})
    ]
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            start, delta = {"type": "text", "text": ""}, {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append(("content_block_start", {"type": "content_block_start", "index": index, "content_block": start}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    stop = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append(("message_delta", {"type": "message_delta", "delta": stop, "usage": {"output_tokens": 10}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


@contextmanager
def serving(root: ScriptedRoot) -> Iterator[str]:
    """Serve `root` on 127.0.0.1; yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet: the test reports what matters
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
            if self.path.startswith("/v1/messages/count_tokens"):
                self._send(200, "application/json", json.dumps({"input_tokens": 100}).encode())
            elif self.path.startswith("/v1/messages"):
                message = root.respond(body)
                if body.get("stream"):
                    self._send(200, "text/event-stream", _sse(message))
                else:
                    self._send(200, "application/json", json.dumps(message).encode())
            else:
                self._send(404, "application/json", b'{"type":"error","error":{"type":"not_found_error"}}')

        def _send(self, status: int, kind: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_claude(
    claude: str,
    base_url: str,
    home: Path,
    mcp_servers: dict[str, Any],
    allowed: list[str],
    timeout: float = 120,
    prompt: str = "Use rlm.",
) -> subprocess.CompletedProcess[str]:
    """`claude -p` with only our MCP server, against the scripted root; HOME is a fresh directory."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "mcp.json"
    config.write_text(json.dumps({"mcpServers": mcp_servers}))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "sk-ant-fake-for-tests",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    command = [claude, "-p", prompt, "--mcp-config", str(config), "--strict-mcp-config"]
    command += ["--allowedTools", " ".join(allowed), "--output-format", "json", "--model", MODEL]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, cwd=home
    )
