"""The test suite's fake provider in a process of its own, steered over its stdin, for benchmarks.

Why a process: a real provider is another machine. Served from a thread of the benchmark, the fake's HTTP
work would compete for the benchmark's GIL, and the same work done by two processes on a 2-core machine
would land on one core, charging the provider's cost to the server under test.

Protocol (one line each way): ``latency SECONDS`` -> ``ok``; ``stats`` -> a JSON object with ``count`` and
``max_in_flight`` (reset by ``reset``). Closing stdin stops the provider.

The fake model is either a fixed answer or, given as `py:module:function`, a function
`answer(prompt, system, model) -> str` (e.g. `py:rlm_mcp.evaluation.tasks:answer`, which reads the chunk it is given).

Run directly: python bench/provider_process.py [ANSWER] (prints the base URL, then reads commands).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[1]


class ProviderProcess:
    """Client side: start the fake in a child process and steer it."""

    def __init__(self, answer: str = "ok") -> None:
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), answer],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.base_url = self._read_line()

    def _read_line(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the provider process exited with {self._process.wait()}")
        return line.strip()

    def _command(self, command: str) -> str:
        assert self._process.stdin is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return self._read_line()

    def set_latency(self, seconds: float) -> None:
        self._command(f"latency {seconds}")

    def reset(self) -> None:
        self._command("reset")

    def stats(self) -> dict[str, int]:
        return json.loads(self._command("stats"))

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(10)

    def __enter__(self) -> ProviderProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve(answer: str) -> None:
    """Child side: serve until stdin closes, answering commands line by line."""
    sys.path.insert(0, str(REPO))
    from testkit.fakes import FakeProvider

    if answer.startswith("py:"):
        import importlib

        _, module, function = answer.split(":")
        answer_fn = getattr(importlib.import_module(module), function)
    else:
        answer_fn = lambda prompt, system, model: answer  # noqa: E731
    with FakeProvider.start_in_thread(answer=answer_fn) as provider:
        print(provider.base_url, flush=True)
        for line in sys.stdin:
            command, _, argument = line.strip().partition(" ")
            if command == "latency":
                provider.latency = float(argument)
                reply = "ok"
            elif command == "reset":
                provider.reset()
                reply = "ok"
            elif command == "stats":
                reply = json.dumps({"count": provider.count, "max_in_flight": provider.max_in_flight})
            else:
                reply = json.dumps({"error": f"unknown command {command!r}"})
            print(reply, flush=True)


if __name__ == "__main__":
    serve(sys.argv[1] if len(sys.argv) > 1 else "ok")
