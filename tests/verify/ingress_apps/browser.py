"""Headless Chromium driven through its DevTools protocol, for the HTML report's tests.

``with Browser(tmp_path) as b: page = b.load(path)`` opens a file:// URL in a fresh profile,
waits for the load event and for ``document.body`` to carry ``data-rendered``, and returns what
the tests check: the console errors and uncaught exceptions, values computed in the page and a
screenshot. Chromium runs in its own session; its whole process group is killed on exit.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import websocket

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
    "--remote-allow-origins=*",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
    "--window-size=1400,1000",
)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    """A loaded page: ``errors`` (console errors and uncaught exceptions) and ``eval``."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.errors: list[str] = []
        self.console: list[str] = []

    def requests(self) -> list[str]:
        """The URLs the page requested (Network.requestWillBeSent), in order."""
        return [
            e["params"]["request"]["url"]
            for e in self.browser.events
            if e["method"] == "Network.requestWillBeSent"
        ]

    def eval(self, expression: str) -> Any:
        result = self.browser.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True}
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        height = int(self.eval("document.documentElement.scrollHeight"))
        self.browser.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1400, "height": min(height, 6000), "deviceScaleFactor": 1, "mobile": False},
        )
        shot = self.browser.call("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


class Browser:
    """One headless Chromium with its profile under ``tmp``; a context manager."""

    def __init__(self, tmp: Path, timeout: float = 30.0) -> None:
        exe = chromium()
        if exe is None:
            raise RuntimeError("chromium is not installed (apt-get install chromium)")
        self.timeout = timeout
        self.profile = tmp / "chromium-profile"
        self.profile.mkdir(parents=True, exist_ok=True)
        (self.profile / "DevToolsActivePort").unlink(missing_ok=True)  # a previous run's
        self.stderr = open(tmp / "chromium.log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
            start_new_session=True,
        )
        self.ws: websocket.WebSocket | None = None
        self._id = 0
        self.events: list[dict[str, Any]] = []
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> None:
        deadline = time.monotonic() + self.timeout
        port_file = self.profile / "DevToolsActivePort"
        while not port_file.exists() or not port_file.read_text().strip():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start (exit {self.proc.poll()})")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                    targets = json.load(r)
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("chromium has no page target")
            time.sleep(0.05)
        self.ws = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=self.timeout, suppress_origin=True
        )

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one command and return its result; events met meanwhile go to ``events``."""
        assert self.ws is not None
        self._id += 1
        mine = self._id
        self.ws.send(json.dumps({"id": mine, "method": method, "params": params or {}}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == mine:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def _wait_event(self, method: str, timeout: float) -> None:
        assert self.ws is not None
        if any(e["method"] == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            message = json.loads(self.ws.recv())
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return
        raise TimeoutError(f"no {method} within {timeout:g} s")

    def load(self, path: Path, *, settle: float = 0.5) -> Page:
        """Open ``path`` (file://), wait for the load event and ``data-rendered``."""
        page = Page(self)
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable")
        self.events.clear()
        self.call("Page.navigate", {"url": path.resolve().as_uri()})
        self._wait_event("Page.loadEventFired", self.timeout)
        deadline = time.monotonic() + self.timeout
        while page.eval("document.body && document.body.getAttribute('data-rendered')") != "yes":
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(settle)
        page.eval("1")  # drain events that arrived meanwhile
        for e in self.events:
            params = e.get("params", {})
            if e["method"] == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text")
                page.errors.append(f"uncaught: {text}")
            elif e["method"] == "Runtime.consoleAPICalled":
                args = " ".join(
                    str(a.get("value", a.get("description", ""))) for a in params["args"]
                )
                page.console.append(f"{params['type']}: {args}")
                if params["type"] in ("error", "assert"):
                    page.errors.append(f"console.{params['type']}: {args}")
            elif e["method"] == "Log.entryAdded":
                entry = params.get("entry", {})
                if entry.get("level") == "error":
                    page.errors.append(f"log: {entry.get('text')} ({entry.get('url', '')})")
        return page

    def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close()
            self.ws = None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.stderr.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
