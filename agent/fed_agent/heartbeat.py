"""Heartbeats to the coordinator's fleet API, on their own thread.

A slow or dead coordinator must never stall the agent's main loop (which feeds the systemd
watchdog), so sending happens here, with a timeout per request and backoff between failed
attempts. The token is read from its credentials file for every send (rotation needs no
restart) and never logged.

The thread must never die: a dead sender stops the watchdog pings and systemd restarts the
whole agent, SuperNode and all. So a snapshot that cannot be built (a value outside the
Heartbeat model's bounds, a failing reading) is one failed send, logged, retried with the
same backoff as an unreachable coordinator.

Each accepted reply's `Date` header goes to `on_date` with the times the request was sent and
answered: the agent's clock offset against the coordinator (fed_agent.clock); each failure's
text to `on_failure` (a certificate "not yet valid" is a clock far behind).
"""

from __future__ import annotations

import http.client
import json
import ssl
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from fed_common.config import format_validation_error
from fed_common.heartbeat import Heartbeat
from pydantic import ValidationError


class HeartbeatSender(threading.Thread):
    def __init__(self, url: str, token_file: Path, interval: float, timeout: float,
                 snapshot: Callable[[], Heartbeat], log, ca_file: Path | None = None,
                 on_reply: Callable[[dict], None] = lambda reply: None,
                 on_accepted: Callable[[Heartbeat], None] = lambda heartbeat: None,
                 on_date: Callable[[Optional[str], float, float], None] = lambda date, sent, received: None,
                 on_failure: Callable[[str], None] = lambda error: None) -> None:
        super().__init__(name="heartbeat", daemon=True)
        # HTTPS to the coordinator is verified against the fleet's own CA when one is given.
        self.ssl_context = ssl.create_default_context(cafile=str(ca_file)) if ca_file else None
        self.url, self.token_file = url, Path(token_file)
        self.interval, self.timeout = interval, timeout
        self.snapshot, self.log, self.on_reply, self.on_accepted = snapshot, log, on_reply, on_accepted
        self.on_date, self.on_failure = on_date, on_failure
        self.stop_event = threading.Event()
        self.sent = 0
        self.failures = 0
        self.last_ok: float | None = None
        self._warned_mode = False

    def read_token(self) -> str:
        try:
            mode = self.token_file.stat().st_mode
            token = self.token_file.read_text().strip()
        except OSError as exc:
            raise RuntimeError(f"token file {self.token_file}: {exc.strerror}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO) and not self._warned_mode:
            self._warned_mode = True
            self.log.warning("token_file_too_open", file=str(self.token_file),
                             mode=oct(stat.S_IMODE(mode)), expected="0600")
        if not token:
            raise RuntimeError(f"token file {self.token_file} is empty")
        return token

    def _build(self) -> tuple[Heartbeat, bytes]:
        """The snapshot and its JSON body; any failure to build them becomes a RuntimeError."""
        try:
            heartbeat = self.snapshot()
            return heartbeat, heartbeat.model_dump_json().encode()
        except ValidationError as exc:
            errors = format_validation_error(exc)
            self.log.error("heartbeat_invalid", errors=errors)
            raise RuntimeError(f"heartbeat does not fit the model: {'; '.join(errors)}") from None
        except Exception as exc:  # noqa: BLE001 - whatever a reading raises, the thread lives on
            self.log.error("heartbeat_snapshot_failed", error=str(exc), error_type=type(exc).__name__)
            raise RuntimeError(f"cannot build the heartbeat: {type(exc).__name__}: {exc}") from None

    def send_once(self) -> None:
        """POST one heartbeat; RuntimeError unless the coordinator accepted it (2xx), and only
        then `on_accepted(heartbeat)`: what it carried (the field summary) is delivered."""
        heartbeat, body = self._build()
        req = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {self.read_token()}"})
        sent_at = time.time()
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl_context) as resp:
                reply = resp.read(65536)
                self.on_date(resp.headers.get("Date"), sent_at, time.time())
        except urllib.error.HTTPError as exc:
            detail = exc.read(500).decode(errors="replace")
            raise RuntimeError(f"HTTP {exc.code} from {self.url}: {detail}") from None
        except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise RuntimeError(f"cannot reach {self.url}: {reason}") from None
        self.on_accepted(heartbeat)
        try:  # the reply carries what the coordinator wants of us (desired_model)
            answer = json.loads(reply)
        except ValueError:
            return
        if isinstance(answer, dict):
            self.on_reply(answer)

    def run(self) -> None:
        delay = 0.0
        while not self.stop_event.wait(delay):
            try:
                self.send_once()
            except Exception as exc:  # noqa: BLE001 - RuntimeError as a rule; anything else too
                self.failures += 1
                self.on_failure(str(exc))
                delay = min(self.interval, 2.0 ** min(self.failures, 10))
                self.log.warning("heartbeat_failed", error=str(exc), retry_in=delay,
                                 failures=self.failures)
                continue
            if self.failures:
                self.log.info("heartbeat_recovered", after_failures=self.failures)
            self.failures, self.sent, self.last_ok = 0, self.sent + 1, time.time()
            delay = self.interval

    def stop(self) -> None:
        self.stop_event.set()
