"""The product on loopback: a real fed-coordinator and real fed-agent daemons.

Why the real daemons and not bare SuperNodes: the demo is what an operator gets. Each
agent has its own state folder (inbox, image store, cache) and a heartbeat token issued by
`fedctl agent-add`; the demo drops the photos into the agents' inboxes the way a camera
program does (written as `.part`, then renamed), starts a campaign with `fedctl run-now`
and follows it with `fedctl campaigns --follow`. The state stays under the work folder, so
every fedctl command the README shows works afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import yaml

from fed_demo.local_fleet import REPO, free_port

COORDINATOR_BIN = REPO / ".venv" / "bin"
AGENT_BIN = Path(os.environ.get("FED_AGENT_BIN", REPO / ".venv-agent" / "bin"))
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def wait_until(condition: Callable[[], bool], timeout: float, what: str, process=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: {process.args[0]} exited {process.returncode}")
        if condition():
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what}: not within {timeout:.0f}s")


class Daemon:
    """One long-running process in its own process group, logging to a file."""

    def __init__(self, argv: list[str], log_path: Path, env: dict | None = None) -> None:
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)

    def logged(self, text: str) -> bool:
        return text in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process_group(self.proc)


def stop_process_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM (what `systemctl stop` sends), `grace` seconds, then SIGKILL to the whole group:
    the daemons' children (SuperLink, SuperNode, app processes) must not outlive them."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


class DemoFleet:
    """A coordinator and N agents under `work`; `stack` stops them all."""

    def __init__(self, work: Path, data_root: Path, settings: dict, clients: int, stack: ExitStack) -> None:
        self.work, self.data_root, self.clients = work, data_root, clients
        self.state_dir = work / "state"
        self.config = work / "coordinator.yaml"
        self.api_port, self.superlink_port = free_port(), free_port()
        self.settings, self.stack = settings, stack

    @property
    def status_page(self) -> str:
        return f"http://127.0.0.1:{self.api_port}/"

    def fedctl(self, *args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(COORDINATOR_BIN / "fedctl"), "-c", str(self.config), *args],
                              capture_output=capture, text=True, timeout=7200)
        if check and proc.returncode != 0:
            raise RuntimeError(f"fedctl {' '.join(args)} failed: {(proc.stderr or '')[-500:]}")
        return proc

    def start_coordinator(self) -> None:
        config = {
            "service": {"state_dir": str(self.state_dir)},
            "superlink": {"host": "127.0.0.1", "port": self.superlink_port},
            "api": {"host": "127.0.0.1", "port": self.api_port, "online_after_seconds": 60},
            "campaign": {"server_data_dir": str(self.data_root / "dataset_server"),
                         "min_nodes": self.clients, **self.settings},
            # No nightly slot during a demo: the campaign starts with `fedctl run-now`.
            "schedule": {"cron": "0 2 * * *", "timezone": "UTC", "catch_up": False},
            "edge_impulse": {"api_key_file": str(self.work / "edge-impulse.key")},
            "logging": {"level": "info"},
        }
        self.work.mkdir(parents=True, exist_ok=True)
        self.config.write_text(yaml.safe_dump(config))
        coordinator = Daemon([str(COORDINATOR_BIN / "fed-coordinator"), "-c", str(self.config)],
                             self.work / "coordinator.log", env=_without_notify())
        self.stack.callback(coordinator.stop)
        wait_until(lambda: coordinator.logged('"coordinator_ready"'), 120, "fed-coordinator ready",
                   coordinator.proc)

    def start_agent(self, index: int) -> Path:
        name = f"pi-{index}"
        home = self.work / "agents" / name
        home.mkdir(parents=True, exist_ok=True)
        token = home / "token"
        self.fedctl("agent-add", name, "--token-file", str(token), "--if-missing")
        config = {
            "agent": {"name": name, "state_dir": str(home / "state")},
            "coordinator": {"superlink": f"127.0.0.1:{self.superlink_port}", "insecure": True,
                            "heartbeat_url": f"http://127.0.0.1:{self.api_port}/api/v1/heartbeat"},
            "supernode": {"port": free_port()},
            "heartbeat": {"interval": 5, "token_file": str(token)},
            "inbox": {"scan_interval": 1, "settle_seconds": 0},
            "labels": list(self.settings.get("labels", ["head", "hardhat"])),
            "logging": {"level": "info"},
        }
        (home / "agent.yaml").write_text(yaml.safe_dump(config))
        agent = Daemon([str(AGENT_BIN / "fed-agent"), "-c", str(home / "agent.yaml")],
                       home / "agent.log", env=_without_notify())
        self.stack.callback(agent.stop)
        inbox = home / "state" / "inbox"
        wait_until(lambda: inbox.is_dir(), 60, f"{name} inbox", agent.proc)
        return inbox


def drop_photos(source: Path, inbox: Path) -> int:
    """Copy a client's photos (`<split>/<label>/*` or `<label>/*`) into an agent's inbox,
    the way a camera program must: under a `.part` name, renamed when complete."""
    count = 0
    for photo in sorted(source.rglob("*")):
        if not photo.is_file() or photo.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        label_dir = inbox / photo.parent.name
        if not label_dir.is_dir():
            continue  # not one of the configured labels
        target = label_dir / f"{photo.parent.parent.name}-{photo.name}"
        partial = target.with_name(target.name + ".part")
        shutil.copyfile(photo, partial)
        partial.rename(target)
        count += 1
    return count


def inbox_drained(inbox: Path) -> bool:
    return not any(path.is_file() for path in inbox.rglob("*"))


def _without_notify() -> dict:
    env = dict(os.environ)
    for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(key, None)
    return env
