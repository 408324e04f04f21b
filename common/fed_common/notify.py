"""systemd notify protocol (READY, STATUS, WATCHDOG, STOPPING) through sdnotify.

Silent when NOTIFY_SOCKET is unset (started by hand), so the daemon behaves the same
outside systemd.
"""

from __future__ import annotations

import os

import sdnotify


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._n = sdnotify.SystemdNotifier() if self.enabled else None
        self._last_status = None

    def _send(self, text: str) -> None:
        """As UTF-8, which systemd reads: sdnotify encodes latin-1 and silently drops a
        message it cannot encode (a STATUS line with `°C` or a non-latin file name)."""
        if self._n is not None:
            try:
                self._n.socket.sendall(text.encode("utf-8", errors="replace"))
            except OSError:  # as sdnotify: no systemd listening must not stop the daemon
                pass

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, text: str) -> None:
        if text != self._last_status:
            self._last_status = text
            self._send(f"STATUS={text}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    @staticmethod
    def watchdog_seconds() -> float | None:
        """The unit's WatchdogSec as systemd passes it (only if meant for this PID)."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 1e6
