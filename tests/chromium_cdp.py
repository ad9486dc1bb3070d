"""Headless Chromium driven over the DevTools protocol, walled off from every host but
this one.

Used by ``test_browser.py``. The browser is Debian's ``chromium``; the protocol is
spoken over one websocket (``websocket-client``), so no browser download and no driver
are needed.

Two independent walls keep pages offline: every host name resolves to nothing except
``localhost``, and every request that is not for the loopback interface is sent to a
proxy address where nothing listens. Whatever a page still tries to fetch elsewhere
shows up in the recorded ``Network.requestWillBeSent`` events, which is what the tests
count.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import websocket

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
NETWORK_SCHEMES = frozenset({"http", "https", "ws", "wss", "ftp"})
# The discard port: nothing listens there, so nothing gets through.
DEAD_PROXY = "http://127.0.0.1:9"


def find_chromium() -> str | None:
    """Return the path of a Chromium executable on ``PATH``, or ``None`` when there is
    none."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def leaves_localhost(url: str) -> bool:
    """Whether fetching ``url`` would use the network beyond this machine's loopback
    interface."""
    parts = urlsplit(url)
    if parts.scheme not in NETWORK_SCHEMES:
        return False  # data:, blob:, about: and the like never touch the network
    host = (parts.hostname or "").lower()
    return host not in LOOPBACK_HOSTS and not host.startswith("127.")


class DevToolsError(RuntimeError):
    """A DevTools command failed, or the browser did not answer in time."""


@dataclass
class PageEvents:
    """What one page did while it loaded: requests, failures and errors it reported."""

    requests: list[str] = field(default_factory=list)  # every URL requested, in order
    # "<error> for <URL>" of loads that failed
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def outside_requests(self) -> list[str]:
        """The requested URLs that are not on the loopback interface."""
        return [url for url in self.requests if leaves_localhost(url)]


class HeadlessChromium:
    """A headless Chromium with one page, controlled through the DevTools protocol.

    Use it as a context manager; the browser process and its profile folder are removed
    on exit.
    """

    def __init__(
        self,
        executable: str,
        window: tuple[int, int] = (1280, 900),
        timeout: float = 30.0,
    ) -> None:
        self.executable = executable
        self.window = window
        self.timeout = timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._profile: tempfile.TemporaryDirectory[str] | None = None
        self._socket: websocket.WebSocket | None = None
        self._next_id = 0
        self._events: list[dict[str, Any]] = []

    def command_line(self, profile: str) -> list[str]:
        """The Chromium arguments: headless, no background traffic, no way out but
        loopback."""
        width, height = self.window
        arguments = [
            self.executable,
            "--headless=new",
            "--disable-gpu",
            "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
            "--hide-scrollbars",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--disable-domain-reliability",
            "--metrics-recording-only",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE "
            "127.0.0.1",
            f"--proxy-server={DEAD_PROXY}",
            f"--window-size={width},{height}",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "about:blank",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            # Chromium refuses to start its sandbox as root
            arguments.insert(1, "--no-sandbox")
        return arguments

    def __enter__(self) -> HeadlessChromium:
        self._profile = tempfile.TemporaryDirectory(
            prefix="crossalign-chromium-", ignore_cleanup_errors=True
        )
        self._process = subprocess.Popen(
            self.command_line(self._profile.name),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            self._socket = websocket.create_connection(
                self._page_socket_url(Path(self._profile.name)),
                timeout=self.timeout,
                suppress_origin=True,
            )
            for domain in ("Page", "Runtime", "Network", "Log"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._socket is not None:
            try:
                # a clean exit lets Chromium flush and close its profile
                self.call("Browser.close")
            except (DevToolsError, websocket.WebSocketException, OSError):
                pass
            self._socket.close()
            self._socket = None
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._profile is not None:
            for _ in range(20):  # helper processes may still be writing for a moment
                try:
                    shutil.rmtree(self._profile.name)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.25)
            self._profile.cleanup()
            self._profile = None

    def _page_socket_url(self, profile: Path) -> str:
        """Wait for Chromium to announce its DevTools port, then return the page's
        websocket URL."""
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout
        while not (port_file.is_file() and port_file.read_text().strip()):
            if self._process is not None and self._process.poll() is not None:
                raise DevToolsError(
                    f"{self.executable} exited with code {self._process.returncode} at "
                    "start"
                )
            if time.monotonic() > deadline:
                raise DevToolsError(
                    f"{self.executable} did not open a DevTools port within "
                    f"{self.timeout} s"
                )
            time.sleep(0.05)
        port = int(port_file.read_text().splitlines()[0])
        while True:
            connection = websocket.create_connection(
                f"ws://127.0.0.1:{port}" + port_file.read_text().splitlines()[1],
                timeout=self.timeout,
                suppress_origin=True,
            )
            try:
                connection.send(json.dumps({"id": 1, "method": "Target.getTargets"}))
                reply = self._receive_reply(connection, 1)
            finally:
                connection.close()
            pages = [
                target for target in reply["targetInfos"] if target["type"] == "page"
            ]
            if pages:
                return f"ws://127.0.0.1:{port}/devtools/page/{pages[0]['targetId']}"
            if time.monotonic() > deadline:
                raise DevToolsError("Chromium opened no page to control")
            time.sleep(0.05)

    @staticmethod
    def _receive_reply(
        connection: websocket.WebSocket, message_id: int
    ) -> dict[str, Any]:
        """Read from ``connection`` until the reply to ``message_id`` arrives; return
        its result."""
        while True:
            message = json.loads(connection.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise DevToolsError(
                        message["error"].get("message", str(message["error"]))
                    )
                return message.get("result", {})

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result; events that arrive meanwhile
        are kept."""
        if self._socket is None:
            raise DevToolsError(
                "the browser is not running: use HeadlessChromium as a context manager"
            )
        self._next_id += 1
        message_id = self._next_id
        self._socket.send(
            json.dumps({"id": message_id, "method": method, "params": params})
        )
        while True:
            message = json.loads(self._socket.recv())
            if "method" in message:
                self._events.append(message)
            elif message.get("id") == message_id:
                if "error" in message:
                    raise DevToolsError(
                        f"{method}: {message['error'].get('message', message['error'])}"
                    )
                return message.get("result", {})

    def _wait_for_event(self, method: str, timeout: float) -> None:
        """Block until an event named ``method`` has been received (it stays in the
        backlog)."""
        assert self._socket is not None
        deadline = time.monotonic() + timeout
        while not any(event["method"] == method for event in self._events):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DevToolsError(f"no {method} within {timeout} s")
            self._socket.settimeout(remaining)
            try:
                message = json.loads(self._socket.recv())
            except websocket.WebSocketTimeoutException as error:
                raise DevToolsError(f"no {method} within {timeout} s") from error
            finally:
                self._socket.settimeout(self.timeout)
            if "method" in message:
                self._events.append(message)

    def open(self, url: str) -> None:
        """Navigate to ``url`` and wait for its load event (the recorded events start
        afresh)."""
        self._events.clear()
        result = self.call("Page.navigate", url=url)
        if result.get("errorText"):
            raise DevToolsError(f"cannot open {url}: {result['errorText']}")
        self._wait_for_event("Page.loadEventFired", self.timeout)
        deadline = time.monotonic() + self.timeout
        # A late load event of the previous page can arrive first: wait until this one
        # is loaded.
        while (
            self.evaluate("document.readyState === 'complete' ? location.href : ''")
            != url
        ):
            if time.monotonic() > deadline:
                raise DevToolsError(
                    f"{url} did not finish loading within {self.timeout} s"
                )
            time.sleep(0.05)

    def evaluate(self, expression: str) -> Any:
        """Evaluate JavaScript in the page (awaiting a promise it returns) and return
        the value."""
        result = self.call(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = details.get("exception", {}).get("description")
            raise DevToolsError(f"script failed: {description or details.get('text')}")
        return result["result"].get("value")

    def events(self) -> PageEvents:
        """Summarise the events recorded since the last ``open``: requests, failures,
        errors."""
        summary = PageEvents()
        urls: dict[str, str] = {}
        for event in self._events:
            method, params = event["method"], event.get("params", {})
            if method == "Network.requestWillBeSent":
                urls[params["requestId"]] = params["request"]["url"]
                summary.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                summary.failed.append(
                    f"{params.get('errorText', 'failed')} for "
                    f"{urls.get(params['requestId'], '?')}"
                )
            elif (
                method == "Network.responseReceived"
                and params["response"]["status"] >= 400
            ):
                summary.errors.append(
                    f"HTTP {params['response']['status']} for "
                    f"{params['response']['url']}"
                )
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                summary.errors.append(
                    details.get("exception", {}).get(
                        "description", details.get("text", "exception")
                    )
                )
            elif method == "Runtime.consoleAPICalled" and params["type"] in (
                "error",
                "assert",
            ):
                summary.errors.append(
                    " ".join(
                        str(arg.get("value", arg.get("description", "")))
                        for arg in params["args"]
                    )
                )
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                entry = params["entry"]
                summary.errors.append(f"{entry['text']} {entry.get('url', '')}".strip())
        return summary

    def screenshot(self, path: Path) -> None:
        """Save what the viewport shows now as a PNG file at ``path``."""
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
