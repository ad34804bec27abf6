"""A real headless Chromium, driven over the DevTools protocol on a pipe (no port, no extra package).

`--remote-debugging-pipe` makes Chromium read commands from its fd 3 and write replies and events to its
fd 4, each a JSON object ended by a NUL byte. That is enough to open a page, run script in it, click,
type and take screenshots: what tests and benchmarks of the trace viewer need from a browser.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(RuntimeError):
    pass


class Browser:
    """One Chromium with one page (tab); use as a context manager."""

    def __init__(self, width: int = 1400, height: int = 900, timeout_s: float = 60.0) -> None:
        executable = chromium_path()
        if executable is None:
            raise BrowserError("Chromium is not installed")
        self.timeout_s = timeout_s
        self._profile = tempfile.TemporaryDirectory(prefix="rlm-mcp-chromium-")
        to_browser_read, self._to_browser = os.pipe()
        self._from_browser, from_browser_write = os.pipe()

        def wire() -> None:  # in the child: the pipe ends become fds 3 and 4 (by way of fds above 9, so that
            high_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)  # neither end overwrites the other)
            high_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(high_read, 3)
            os.dup2(high_write, 4)

        self._process = subprocess.Popen(
            [
                executable,
                *FLAGS,
                f"--window-size={width},{height}",
                f"--user-data-dir={self._profile.name}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,  # the parent's own fds are close-on-exec already
            preexec_fn=wire,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._ids = iter(range(1, 1 << 30))
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send("Page.enable", session=True)
        self.send("Runtime.enable", session=True)

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 20)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\0" in buffer:
                message, buffer = buffer.split(b"\0", 1)
                reply = json.loads(message)
                if "id" in reply:
                    with self._lock:
                        waiting = self._replies.get(reply["id"])
                    if waiting is not None:
                        waiting.put(reply)
                else:
                    self._events.put(reply)

    def send(self, method: str, session: bool = False, **params: Any) -> dict[str, Any]:
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        waiting: queue.Queue[dict[str, Any]] = queue.Queue()
        with self._lock:
            self._replies[number] = waiting
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            reply = waiting.get(timeout=self.timeout_s)
        except queue.Empty:
            raise BrowserError(f"Chromium did not answer {method} within {self.timeout_s} s") from None
        finally:
            with self._lock:
                self._replies.pop(number, None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str, ready: str = "document.body && document.body.dataset.ready === 'yes'") -> None:
        """Go to `url` and wait until the expression `ready` holds (the viewer marks its body when drawn)."""
        self.send("Page.navigate", session=True, url=url)
        self.wait_for(ready)

    def evaluate(self, expression: str) -> Any:
        result = self.send(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression[:80]}: {result['exceptionDetails'].get('exception', result)}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real mouse click at the middle of the first element `selector` matches."""
        box = self.evaluate(
            f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        self.click_at(box[0], box[1])

    def click_at(self, x: float, y: float) -> None:
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)

    def type(self, text: str) -> None:
        self.send("Input.insertText", session=True, text=text)

    def key(self, key: str, code: str | None = None, key_code: int = 0) -> None:
        for kind in ("keyDown", "keyUp"):
            self.send(
                "Input.dispatchKeyEvent",
                session=True,
                type=kind,
                key=key,
                code=code or key,
                windowsVirtualKeyCode=key_code,
            )

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", session=True, format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (BrowserError, OSError):
            pass
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for descriptor in (self._to_browser, self._from_browser):
            try:
                os.close(descriptor)
            except OSError:
                pass
        self._profile.cleanup()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
