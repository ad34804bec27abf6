"""The frame format: a 4-byte big-endian length, then that many bytes of one UTF-8 JSON object, capped both ways.

Whatever the worker sends is parsed as data and nothing else; a frame that is cut short, is not JSON, holds no
object or announces more than the cap is a ProtocolError, never a partial message or an unbounded allocation.
"""

from __future__ import annotations

import io
import os
import threading

import pytest

from rlm_mcp.bridge.frames import (
    HEADER,
    MAX_FRAME_BYTES,
    FrameBuffer,
    ProtocolError,
    check_length,
    decode,
    encode,
    read_frame,
    write_frame,
)

MESSAGE = {"op": "exec", "id": 7, "code": "print('héllo ✓')", "cell": 3, "nested": {"a": [1, 2.5, None, True]}}


def framed(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def test_a_frame_is_a_big_endian_length_then_compact_utf8_json() -> None:
    data = encode({"op": "ready", "text": "é"})
    assert data[:4] == len(data[4:]).to_bytes(4, "big")
    assert data[4:] == '{"op":"ready","text":"é"}'.encode()  # no ASCII escapes, no spaces
    assert decode(data[4:]) == {"op": "ready", "text": "é"}


def test_a_message_survives_the_round_trip() -> None:
    assert read_frame(io.BytesIO(encode(MESSAGE))) == MESSAGE


def test_a_lone_surrogate_is_replaced_rather_than_failing_the_frame() -> None:
    """Undecodable output carried as surrogates must not cost the cell its whole reply."""
    assert decode(encode({"stdout": "a\udcffb"})[4:]) == {"stdout": "a?b"}


def test_a_message_over_the_cap_is_refused_before_it_is_sent() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        encode({"x": "y" * MAX_FRAME_BYTES})


def test_the_cap_is_64_mib_and_inclusive() -> None:
    assert MAX_FRAME_BYTES == 64 * 1024 * 1024
    assert check_length(MAX_FRAME_BYTES) == MAX_FRAME_BYTES
    with pytest.raises(ProtocolError, match="over the"):
        check_length(MAX_FRAME_BYTES + 1)


@pytest.mark.parametrize(
    "payload, why",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "holds a list"),
        (b'"op"', "holds a str"),
        (b"42", "holds a int"),
        (b"null", "holds a NoneType"),
    ],
)
def test_garbage_or_a_non_object_is_a_protocol_error(payload: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode(payload)
    with pytest.raises(ProtocolError, match=why):
        read_frame(io.BytesIO(framed(payload)))


def test_a_clean_end_of_stream_is_none_and_a_cut_frame_is_an_error() -> None:
    assert read_frame(io.BytesIO(b"")) is None
    whole = encode(MESSAGE)
    with pytest.raises(ProtocolError, match="inside a frame header"):
        read_frame(io.BytesIO(whole[:3]))
    with pytest.raises(ProtocolError, match="inside a frame"):
        read_frame(io.BytesIO(whole[:-1]))


def test_a_frame_announcing_more_than_the_cap_is_refused_before_reading_it() -> None:
    stream = io.BytesIO(HEADER.pack(MAX_FRAME_BYTES + 1) + b"{}")
    with pytest.raises(ProtocolError, match="announces"):
        read_frame(stream)
    assert stream.tell() == HEADER.size  # the payload was never read
    buffer = FrameBuffer()
    buffer.feed(HEADER.pack(2**32 - 1))
    with pytest.raises(ProtocolError, match="announces"):
        buffer.next_frame()


def test_write_frame_writes_a_frame_bigger_than_a_pipe_holds() -> None:
    """os.write on a pipe may take only part of the data: the whole frame must still arrive."""
    big = {"op": "exec", "code": "x" * (1024 * 1024)}
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=write_frame, args=(write_end, big))
    writer.start()
    try:
        with os.fdopen(read_end, "rb") as stream:
            assert read_frame(stream) == big
            writer.join(10)
            os.close(write_end)
            write_end = -1
            assert read_frame(stream) is None
    finally:
        if write_end != -1:
            os.close(write_end)


def test_frame_buffer_reassembles_frames_from_any_split() -> None:
    messages = [MESSAGE, {"id": 7, "ok": True}, {"op": "llm", "calls": []}]
    stream = b"".join(encode(message) for message in messages)
    for size in (1, 3, 4, 5, 17, len(stream)):
        buffer = FrameBuffer()
        got = []
        for start in range(0, len(stream), size):
            buffer.feed(stream[start : start + size])
            while (message := buffer.next_frame()) is not None:
                got.append(message)
        assert got == messages, size
        assert buffer.next_frame() is None  # nothing left over


def test_frame_buffer_keeps_a_partial_frame_until_the_rest_comes() -> None:
    """A read cancelled mid-frame loses nothing: the half frame waits in the buffer."""
    data = encode(MESSAGE)
    buffer = FrameBuffer()
    buffer.feed(data[:2])
    assert buffer.next_frame() is None
    buffer.feed(data[2:10])
    assert buffer.next_frame() is None
    buffer.feed(data[10:] + encode({"ok": True})[:5])
    assert buffer.next_frame() == MESSAGE
    assert buffer.next_frame() is None


def test_frame_buffer_raises_on_garbage() -> None:
    buffer = FrameBuffer()
    buffer.feed(framed(b"\x00\x01 not json"))
    with pytest.raises(ProtocolError, match="not valid JSON"):
        buffer.next_frame()
