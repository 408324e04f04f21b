"""A real fed-coordinator process (console script, own process group) for tests."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import yaml

from conftest import REPO, apply_overrides, read_json_lines, wait_for
from fed_demo.services import stop_process_group

BIN = REPO / ".venv" / "bin"


def write_coordinator_config(path: Path, state_dir: Path, data_dir: Path, weights: Path,
                             superlink_port: int, api_port: int, **overrides) -> Path:
    cfg = {
        "service": {"state_dir": str(state_dir)},
        "superlink": {"host": "127.0.0.1", "port": superlink_port},
        "api": {"host": "127.0.0.1", "port": api_port, "online_after_seconds": 60},
        "campaign": {"server_data_dir": str(data_dir / "dataset_server"), "weights": str(weights),
                     "rounds": 3, "local_epochs": 2, "min_nodes": 2, "node_wait_seconds": 30,
                     "round_timeout_seconds": 60, "deadline_seconds": 400},
        "schedule": {"cron": "0 2 * * *", "timezone": "UTC", "catch_up": False},
        "edge_impulse": {"api_key_file": str(path.parent / "no-ei-key")},
        "rollout": {},
        "logging": {"level": "info"},
    }
    apply_overrides(cfg, overrides)
    path.write_text(yaml.safe_dump(cfg))
    return path


class CoordinatorProcess:
    def __init__(self, config: Path, log_path: Path, notify_path: str | None = None) -> None:
        env = dict(os.environ)
        if notify_path:
            env["NOTIFY_SOCKET"] = notify_path
        self.config, self.log_path = config, log_path
        self.offset = log_path.stat().st_size if log_path.exists() else 0  # this process's lines only
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([str(BIN / "fed-coordinator"), "-c", str(config)],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def events(self) -> list[dict]:
        return read_json_lines(self.log_path, self.offset)

    def wait_ready(self, timeout: float = 90) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"fed-coordinator exited {self.proc.returncode}: "
                                     f"{self.log_path.read_text()[-2000:]}")
            return any(e.get("event") == "coordinator_ready" for e in self.events())
        wait_for(ready, timeout, what="coordinator_ready")

    def kill_all(self) -> None:
        """What a crash (or systemd killing the cgroup) does: SIGKILL to the whole group."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()

    def stop(self) -> None:
        stop_process_group(self.proc, grace=30)
        self.log.close()


def fedctl(config: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "fedctl"), "-c", str(config), *args], capture_output=True,
                          text=True, timeout=timeout)
