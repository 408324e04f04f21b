"""At most one log line per client per minute for a refusal anyone on the network can cause.

Why: "unknown agent token" is logged so an operator sees a misconfigured Pi, but any host
that reaches the API can send thousands a second and fill the journal. Each client address
gets one line per `every` seconds; that line says how many were held back since the last.
"""

from __future__ import annotations

import time
from typing import Callable


class LogThrottle:
    def __init__(self, every: float = 60.0, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.max_keys, self._clock = every, max_keys, clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """None: hold this line back. Else log it, with the returned count of held-back lines."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) >= self.max_keys:  # bounded memory whatever the number of senders
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        return self._held.pop(key, 0)


def client_address(request) -> str:
    """The sender: nginx's X-Forwarded-For when the peer is the local proxy, else the peer."""
    peer = request.client.host if request.client else ""
    forwarded = request.headers.get("x-forwarded-for", "")
    if peer in ("127.0.0.1", "::1") and forwarded:
        return forwarded.split(",")[-1].strip()[:64]
    return peer
