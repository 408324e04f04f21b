"""Real fed-agent processes for tests: a notify socket, a heartbeat endpoint, a config.

Nothing here is a stand-in for our own code: the agent runs as the installed console script
from the agent venv, under a NOTIFY_SOCKET the test owns, like systemd would start it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import REPO, apply_overrides, read_json_lines
from fed_demo.services import stop_process_group

AGENT_BIN = REPO / ".venv-agent" / "bin"


class NotifySocket:
    """An AF_UNIX datagram socket collecting what the agent tells 'systemd'."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str, since: float = 0.0) -> list[str]:
        return [m for t, m in list(self.messages) if m.startswith(prefix) and t >= since]

    def close(self) -> None:
        self._stop = True
        self.sock.close()


class HeartbeatServer:
    """Loopback endpoint recording every heartbeat POST (headers, raw bytes, parsed body and
    the status it was answered with: `status`, which a test may change to refuse posts)."""

    def __init__(self, status: int = 200) -> None:
        received = self.received = []
        outer = self
        self.status = status

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = outer.status  # read once: a test may change it between requests
                received.append({"time": time.monotonic(), "headers": dict(self.headers),
                                 "raw": body, "body": json.loads(body), "status": status})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v1/heartbeat"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def token_file(folder: Path, secret: str = "t") -> Path:
    """The agent's bearer token file, 0600 as the agent expects it."""
    path = folder / "token"
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


def write_config(path: Path, state_dir: Path, superlink: str, heartbeat_url: str,
                 token_file: Path, supernode_port: int, **overrides) -> Path:
    cfg = {
        "agent": {"name": "pi-test", "state_dir": str(state_dir)},
        "coordinator": {"superlink": superlink, "insecure": True, "heartbeat_url": heartbeat_url},
        "supernode": {"port": supernode_port, "restart_backoff_initial": 0.5,
                      "restart_backoff_max": 4.0},
        "heartbeat": {"interval": 5, "timeout": 3, "token_file": str(token_file)},
        # index_save_seconds 0: the tests read data/.index.json as soon as the agent changed it
        # (test_agent_index_writes.py runs production's 300 s)
        "inbox": {"scan_interval": 1, "settle_seconds": 0, "min_width": 32, "min_height": 32,
                  "index_save_seconds": 0},
        "labels": ["head", "hardhat"],
        "model": {},
        "inference": {},
        "labeling": {},
        "logging": {"level": "info"},
    }
    apply_overrides(cfg, overrides)
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


class AgentProcess:
    def __init__(self, config: Path, notify: NotifySocket, log_path: Path,
                 watchdog_usec: int = 3_000_000) -> None:
        env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC=str(watchdog_usec))
        env.pop("WATCHDOG_PID", None)
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([str(AGENT_BIN / "fed-agent"), "-c", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def children(self) -> list[int]:
        try:
            text = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def events(self) -> list[dict]:
        return read_json_lines(self.log_path)

    def stop(self) -> None:
        stop_process_group(self.proc, grace=20)
        self.log.close()
