"""Capturing everything a cell writes to stdout and stderr.

File descriptors 1 and 2 of the worker point at files, not pipes: `print`, C extensions and child
processes that write straight to the descriptors all land there, nothing can reach the MCP stream, and a
cell that prints gigabytes cannot block on a full pipe. The files are truncated before each cell.

The server creates the files, in a directory the worker cannot open, and hands them over as open
descriptors: the worker never opens them by name, so nothing it plants can redirect them.
"""

from __future__ import annotations

import fcntl
import io
import os
import sys
from dataclasses import dataclass

from rlm_mcp.units import MiB

# Beyond this many bytes only the head and tail of an output are read back into the REPL.
READ_BACK_MAX_BYTES = 64 * MiB


@dataclass
class Captured:
    text: str
    chars: int
    complete: bool


class _Stream:
    """One captured descriptor: a private fd on the file, re-pointed onto `target_fd` before each cell."""

    def __init__(self, fd: int, target_fd: int) -> None:
        self.target_fd = target_fd
        self.fd = fd
        os.set_inheritable(fd, False)
        # Appending, so that after each truncation writes start again at the beginning of the file.
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
        self.wrapper = self._new_wrapper()

    def _new_wrapper(self) -> io.TextIOWrapper:
        raw = io.FileIO(self.target_fd, "w", closefd=False)
        return io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8", errors="backslashreplace")

    def reset(self) -> None:
        os.dup2(self.fd, self.target_fd)
        os.ftruncate(self.fd, 0)
        if self.wrapper.closed:
            self.wrapper = self._new_wrapper()

    def flush(self) -> None:
        try:
            self.wrapper.flush()
        except (OSError, ValueError):
            pass

    def read(self) -> Captured:
        size = os.fstat(self.fd).st_size
        if size <= READ_BACK_MAX_BYTES:
            text = os.pread(self.fd, size, 0).decode("utf-8", "replace")
            return Captured(text, len(text), complete=True)
        half = READ_BACK_MAX_BYTES // 2
        head = os.pread(self.fd, half, 0).decode("utf-8", "replace")
        tail = os.pread(self.fd, half, size - half).decode("utf-8", "replace")
        skipped = size - 2 * half
        text = f"{head}\n[... {skipped:,} bytes not kept in memory ...]\n{tail}"
        return Captured(text, size, complete=False)


class OutputCapture:
    def __init__(self, stdout_fd: int, stderr_fd: int) -> None:
        self.stdout = _Stream(stdout_fd, 1)
        self.stderr = _Stream(stderr_fd, 2)
        self.stdout.reset()
        self.stderr.reset()
        self.install()

    def install(self) -> None:
        """(Re)bind sys.stdout/sys.stderr, which user code may have replaced or closed."""
        sys.stdout = self.stdout.wrapper
        sys.stderr = self.stderr.wrapper

    def begin(self) -> None:
        self.finish()
        self.stdout.reset()
        self.stderr.reset()
        self.install()

    def finish(self) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        self.stdout.flush()
        self.stderr.flush()
        self.install()
