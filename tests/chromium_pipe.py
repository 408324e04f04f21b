"""Headless Chromium driven over the DevTools protocol, for tests that click and type.

Why the pipe: `--remote-debugging-pipe` speaks the protocol on file descriptors 3 and 4
(JSON messages ended by a NUL byte), so no port, no websocket library and nobody else on
the machine can drive this browser. Clicks and keys are real input events
(Input.dispatchMouseEvent / Input.dispatchKeyEvent): the page's own handlers see them as a
person's, `isTrusted` included.
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
from pathlib import Path
from typing import Any, Optional

from conftest import wait_for
from fed_demo.services import stop_process_group

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", "--disable-quic",
         "--remote-debugging-pipe"]
# Key name -> (code, Windows virtual key code): what Input.dispatchKeyEvent needs for a key press.
KEYS = {**{str(d): (f"Digit{d}", 48 + d) for d in range(10)}, "s": ("KeyS", 83), "x": ("KeyX", 88)}


class Chromium:
    def __init__(self, profile: Path, width: int = 1200, height: int = 1100, timeout: float = 60) -> None:
        to_browser, self._in = os.pipe()
        self._out, from_browser = os.pipe()

        def descriptors() -> None:  # in the child: its fd 3 reads our commands, fd 4 writes answers
            read, write = os.dup(to_browser), os.dup(from_browser)
            os.dup2(read, 3)
            os.dup2(write, 4)

        with open(profile.parent / "chromium.log", "wb") as log:
            self.proc = subprocess.Popen(["chromium", *FLAGS, f"--user-data-dir={profile}",
                                          f"--window-size={width},{height}", "about:blank"],
                                         preexec_fn=descriptors, close_fds=False, start_new_session=True,
                                         stdout=subprocess.DEVNULL, stderr=log)
        os.close(to_browser)
        os.close(from_browser)
        self.timeout, self._next_id, self._buffer = timeout, 0, b""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def call(self, method: str, session: Optional[str] = None, **params) -> dict:
        """Send one command and return its result (events in between are dropped)."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._in, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._out], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def page(self, method: str, **params) -> dict:
        return self.call(method, session=self.session, **params)

    def evaluate(self, expression: str) -> Any:
        """The value of `expression` in the page; None while the page is being replaced."""
        try:
            result = self.page("Runtime.evaluate", expression=expression, returnByValue=True)
        except RuntimeError:  # the context went away under a navigation
            return None
        return None if "exceptionDetails" in result else result["result"].get("value")

    def open(self, url: str) -> None:
        self.page("Page.navigate", url=url)
        self.loaded(lambda: self.evaluate("location.href") == url, f"{url} to load")

    def loaded(self, condition, what: str) -> None:
        """Wait until the document is complete (its images too) and `condition()` holds."""
        wait_for(lambda: self.evaluate("document.readyState === 'complete' && "
                                       "Array.from(document.images).every(i => i.complete)") and condition(),
                 30, 0.05, what)

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element."""
        box = self.evaluate(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            ".getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        assert box, f"no element {selector} to click"
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def press(self, key: str) -> None:
        """A real key press (down, the character, up)."""
        code, vk = KEYS[key]
        self.page("Input.dispatchKeyEvent", type="keyDown", key=key, code=code, text=key,
                  windowsVirtualKeyCode=vk, nativeVirtualKeyCode=vk)
        self.page("Input.dispatchKeyEvent", type="keyUp", key=key, code=code, windowsVirtualKeyCode=vk,
                  nativeVirtualKeyCode=vk)

    def screenshot(self, path: Path) -> Path:
        shot = self.page("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        for fd in (self._in, self._out):
            os.close(fd)
        stop_process_group(self.proc, grace=10)
