"""Headless Chromium (Debian's package) driven over the DevTools protocol: open a local page, and
read back what a person would see (text, element counts, a screenshot) and what went wrong
(console errors, uncaught exceptions, requests that left the file).

Chromium starts offline-quiet (no background networking, component updates, sync or QUIC) with a
fresh profile, listens on a loopback port it picks, and is stopped when the `with` block ends.
Only `websocket-client` is needed beyond the standard library (a dev dependency).
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
LOCAL_SCHEMES = ("file:", "data:", "about:")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """`with Page(path, width, height) as page:` loads the file; `events` holds every console call,
    exception, log entry and request the page made."""

    def __init__(self, path: Path, width: int = 1280, height: int = 900, timeout_s: float = 60.0) -> None:
        self.path, self.width, self.height, self.timeout_s = Path(path).resolve(), width, height, timeout_s
        self.events: list[dict] = []
        self._next_id = 0

    def __enter__(self) -> Page:
        import websocket

        executable = chromium_path()
        if executable is None:
            raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
        self._profile = tempfile.mkdtemp(prefix="vts-drive-chromium-")
        self._process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self._profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            port = self._devtools_port()
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            page = next(t for t in targets if t["type"] == "page")
            self._socket = websocket.create_connection(
                page["webSocketDebuggerUrl"], timeout=self.timeout_s, suppress_origin=True
            )
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=self.width,
                height=self.height,
                deviceScaleFactor=1,
                mobile=False,
            )
            self.call("Page.navigate", url=self.path.as_uri())
            self._wait_for("Page.loadEventFired")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _devtools_port(self) -> int:
        """The port Chromium chose, from the file it writes into the profile once it listens."""
        active = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if active.is_file() and active.read_text().strip():
                return int(active.read_text().split()[0])
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self._process.returncode} before listening")
            time.sleep(0.1)
        raise TimeoutError(f"chromium did not open its DevTools port within {self.timeout_s} s")

    def _receive(self) -> dict:
        message = json.loads(self._socket.recv())
        if "method" in message:
            self.events.append(message)
        return message

    def _wait_for(self, method: str) -> dict:
        while True:
            message = self._receive()
            if message.get("method") == method:
                return message

    def call(self, method: str, **params: object) -> dict:
        """One DevTools command; its result (events arriving meanwhile are kept)."""
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = self._receive()
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> object:
        """The value of a JavaScript expression in the page (JSON-serialisable values only)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """A PNG of the viewport, or of the whole page."""
        params: dict = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(
                captureBeyondViewport=True,
                clip={"x": 0, "y": 0, "width": self.width, "height": size["height"], "scale": 1},
            )
        Path(path).write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))
        return Path(path)

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error log entries (CSP violations, failed loads)."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(
                    "console: "
                    + " ".join(
                        str(arg.get("value", arg.get("description"))) for arg in params.get("args", [])
                    )
                )
            elif method == "Runtime.exceptionThrown":
                found.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:300])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append("log: " + params["entry"].get("text", ""))
        return found

    def remote_requests(self) -> list[str]:
        """URLs the page asked for beyond local files and inline data: a self-contained page asks none."""
        urls = [
            event["params"]["request"]["url"]
            for event in self.events
            if event["method"] == "Network.requestWillBeSent"
        ]
        return [url for url in urls if not url.startswith(LOCAL_SCHEMES)]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        socket = getattr(self, "_socket", None)
        if socket is not None:
            socket.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)
