"""The small pure pieces: frames, output shaping, glob matching, value descriptions."""

from __future__ import annotations

import pytest

from rlm_mcp.bridge import frames
from rlm_mcp.contexts.globs import compile_glob
from rlm_mcp.worker.reader import count_lines, decode, looks_binary
from rlm_mcp.worker.shaping import elide
from rlm_mcp.worker.variables import bounded_repr, changed_names, fingerprint


def test_frames_reassemble_from_any_chunking() -> None:
    messages = [{"op": "exec", "code": "x = 'é' * 3", "id": i} for i in range(5)]
    stream = b"".join(frames.encode(m) for m in messages)
    buffer = frames.FrameBuffer()
    received = []
    for i in range(0, len(stream), 7):  # chunks that split headers and payloads
        buffer.feed(stream[i : i + 7])
        while (frame := buffer.next_frame()) is not None:
            received.append(frame)
    assert received == messages


def test_oversized_and_malformed_frames_are_protocol_errors() -> None:
    buffer = frames.FrameBuffer()
    buffer.feed(frames.HEADER.pack(frames.MAX_FRAME_BYTES + 1))
    with pytest.raises(frames.ProtocolError, match="cap"):
        buffer.next_frame()
    buffer = frames.FrameBuffer()
    buffer.feed(frames.HEADER.pack(3) + b"[1]")
    with pytest.raises(frames.ProtocolError, match="expected an object"):
        buffer.next_frame()
    buffer = frames.FrameBuffer()
    buffer.feed(frames.HEADER.pack(3) + b"{x}")
    with pytest.raises(frames.ProtocolError, match="not valid JSON"):
        buffer.next_frame()


def test_lone_surrogates_do_not_break_a_frame() -> None:
    frame = frames.encode({"stdout": "bad \udcff byte"})
    buffer = frames.FrameBuffer()
    buffer.feed(frame)
    assert buffer.next_frame() == {"stdout": "bad ? byte"}


def test_elide_keeps_head_and_tail_and_states_the_true_length() -> None:
    text = "".join(f"line {i}\n" for i in range(100_000))
    shown = elide(text, 1_000, "_outs[3]")
    assert len(shown) < 1_200
    assert shown.startswith("line 0\n") and shown.endswith("line 99999\n")
    assert f"of {len(text):,} characters omitted" in shown and "_outs[3]" in shown
    assert elide("short", 1_000, "x") == "short"


def test_globs_follow_shell_rules() -> None:
    assert compile_glob("*.py").match("a.py") and not compile_glob("*.py").match("src/a.py")
    deep = compile_glob("**/*.py")
    assert deep.match("a.py") and deep.match("src/pkg/a.py") and not deep.match("a.pyc")
    assert compile_glob("src/**").match("src/x/y.txt")
    assert compile_glob("data/file?.[ch]").match("data/file1.c") and not compile_glob("data/file?.[ch]").match(
        "data/file12.c"
    )
    assert compile_glob("[!a]*").match("b.txt") and not compile_glob("[!a]*").match("a.txt")


def test_decode_counts_only_inserted_replacements() -> None:
    assert decode("ok \ufffd".encode()).replaced == 0
    decoded = decode(b"caf\xe9 \xff ok")
    assert decoded.replaced == 2 and decoded.text == "caf\ufffd \ufffd ok"
    assert decode(b"\xef\xbb\xbfbom").text == "bom"
    assert looks_binary(b"PK\x03\x04\x00\x00") and not looks_binary("plain é".encode())
    assert count_lines("") == 0 and count_lines("a") == 1 and count_lines("a\nb\n") == 2


def test_bounded_repr_costs_the_limit_not_the_value() -> None:
    huge = "x" * 10_000_000
    shown = bounded_repr(huge, 50)
    assert len(shown) < 100 and "10,000,000 in all" in shown
    many = list(range(1_000_000))
    assert len(bounded_repr(many, 50)) < 1_000


def test_fingerprint_sees_new_rebound_and_grown_names() -> None:
    namespace: dict[str, object] = {"a": [1], "b": 2, "_private": 3}
    before = fingerprint(namespace)
    namespace["a"].append(2)  # type: ignore[attr-defined]
    namespace["c"] = "new"
    namespace["_private"] = 4
    assert sorted(changed_names(before, fingerprint(namespace))) == ["a", "c"]


def test_a_trace_past_its_size_keeps_events_but_drops_their_texts(tmp_path) -> None:
    from rlm_mcp.trace import Tracer, read_events

    tracer = Tracer(tmp_path / "trace.jsonl", full_text_bytes=2_000)
    for number in range(10):
        with tracer.event("tool", "run_code", code="x" * 500) as tool, tracer.event("cell", f"cell {number}"):
            tool.set(outcome="ok")
    events = read_events(tmp_path / "trace.jsonl")
    assert sorted(e["id"] for e in events) == list(range(1, 21))  # written as they finish: children first
    tools = [e for e in events if e["type"] == "tool"]
    assert tools[0]["code"] == "x" * 500 and "texts_dropped" not in tools[0]
    late = tools[-1]
    assert "code" not in late and late["texts_dropped"] == ["code"] and late["outcome"] == "ok"
    assert all(e["parent"] is not None for e in events if e["type"] == "cell")
