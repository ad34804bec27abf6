"""The frame format between the server (host) and its REPL worker.

A frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON holding one object.
JSON rather than pickle because the worker runs untrusted code: whatever it sends the host is parsed as
data and nothing else. Frames are capped both ways so a misbehaving peer cannot make the other side
allocate without bound; a bad frame is a protocol violation and ends the connection.

Shared by both sides of the boundary (tests/test_boundary.py).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any, BinaryIO

from rlm_mcp.units import MiB

HEADER = struct.Struct(">I")
MAX_FRAME_BYTES = 64 * MiB


class ProtocolError(Exception):
    """The peer sent something that is not a valid frame."""


def encode(message: dict[str, Any]) -> bytes:
    # "replace" turns lone surrogates (from undecodable output) into "?" instead of failing the frame.
    payload = json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(payload):,} bytes exceeds the {MAX_FRAME_BYTES:,}-byte cap")
    return HEADER.pack(len(payload)) + payload


def decode(payload: bytes) -> dict[str, Any]:
    try:
        message = json.loads(payload)
    except ValueError as exc:
        raise ProtocolError(f"frame is not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"frame holds a {type(message).__name__}, expected an object")
    return message


def check_length(length: int) -> int:
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame announces {length:,} bytes, over the {MAX_FRAME_BYTES:,}-byte cap")
    return length


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    """Blocking read of one frame; None on a clean end of stream."""
    header = stream.read(HEADER.size)
    if not header:
        return None
    if len(header) < HEADER.size:
        raise ProtocolError("stream ended inside a frame header")
    length = check_length(HEADER.unpack(header)[0])
    payload = stream.read(length)
    if len(payload) < length:
        raise ProtocolError("stream ended inside a frame")
    return decode(payload)


def write_frame(fd: int, message: dict[str, Any]) -> None:
    """Blocking write of one whole frame to a raw file descriptor."""
    data = memoryview(encode(message))
    while data:
        written = os.write(fd, data)
        data = data[written:]


class FrameBuffer:
    """Reassembles frames from arbitrary chunks.

    The host reads under timeouts and cancellation; keeping partial data here (rather than in local
    variables of a read loop) means a cancelled read never loses half a frame.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        self._buffer.extend(chunk)

    def next_frame(self) -> dict[str, Any] | None:
        if len(self._buffer) < HEADER.size:
            return None
        length = check_length(HEADER.unpack_from(self._buffer)[0])
        end = HEADER.size + length
        if len(self._buffer) < end:
            return None
        payload = bytes(self._buffer[HEADER.size : end])
        del self._buffer[:end]
        return decode(payload)
