"""Keeps one `flower-supernode` child running, whatever happens to it.

The child is restarted with capped exponential backoff whenever it exits, with status 0
too: Flower's SuperNode exits 0 when a SuperLink that lost its state rejects it, and a Pi
must then simply come back. Backoff resets once a child has stayed up for a while. The
child's output is re-emitted as JSON log lines so journald holds one format.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from fed_common.logs import emit_raw
from fed_common.node_config import NodeConfig
from fed_common.store import StoreLayout

from .pi_monitor import decline_file

BIN_DIR = Path(sys.executable).parent
STABLE_SECONDS = 60.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
NODE_ID = re.compile(r"SuperNode ID: (\d+)")


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code == 0:
        return "exited with status 0 (a SuperLink that lost its state rejects the node this way)"
    return f"exited with status {code}"


class SuperNodeSupervisor:
    def __init__(self, cfg, log, bin_dir: Path = BIN_DIR, clock=time.monotonic) -> None:
        self.cfg, self.log, self.bin_dir, self.clock = cfg, log, Path(bin_dir), clock
        self.proc: subprocess.Popen | None = None
        self.backoff = cfg.supernode.restart_backoff_initial
        self.next_start = 0.0
        self.started_at: float | None = None
        self.restarts = 0
        self.node_id: str | None = None
        self.registered = False
        self.last_exit: str | None = None
        self._reader: threading.Thread | None = None

    @property
    def status_file(self) -> Path:
        """Where the ClientApp records its LastTraining (read back for heartbeats)."""
        return StoreLayout(self.cfg.agent.state_dir).status_file

    def node_config(self) -> str:
        """The --node-config string, from the same NodeConfig model the ClientApp parses."""
        c = self.cfg
        return NodeConfig(data_dir=c.data_dir, cache_dir=c.cache_dir, agent_name=c.agent.name,
                          status_file=self.status_file, max_temp_c=c.training.max_temp_c,
                          thermal_dir=c.health.thermal_dir, throttled_file=c.health.throttled_file,
                          decline_file=decline_file(self.status_file)).to_flwr()

    def command(self) -> list[str]:
        c = self.cfg
        cmd = [str(self.bin_dir / "flower-supernode"), "--superlink", c.coordinator.superlink,
               "--port", str(c.supernode.port)]
        if c.coordinator.insecure:
            cmd.append("--insecure")
        else:
            cmd += ["--root-certificates", str(c.coordinator.root_certificates)]
        if c.supernode.auth_private_key:
            # a path, never the key itself: nothing secret appears in the process list
            cmd += ["--auth-supernode-private-key", str(c.supernode.auth_private_key)]
        return cmd + ["--node-config", self.node_config()]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        # Flower spawns flower-superexec and flwr-clientapp by name: our venv first.
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env["FLWR_HOME"] = str(Path(self.cfg.agent.state_dir) / "flwr")
        env["FLWR_TELEMETRY_ENABLED"] = "0"
        env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
        for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            env.pop(name, None)  # the child must not talk to systemd as if it were us
        return env

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def serving(self) -> bool:
        """A message (a training round) is being served: a flwr-clientapp runs under the SuperNode."""
        if not self.running():
            return False
        todo = [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                if pid != self.proc.pid and b"flwr-clientapp" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return True
            except OSError:
                continue  # gone meanwhile
            todo += [int(child) for child in children]
        return False

    def poll(self) -> None:
        now = self.clock()
        if self.proc is not None:
            code = self.proc.poll()
            if code is None:
                if self.started_at is not None and now - self.started_at > STABLE_SECONDS:
                    self.backoff = self.cfg.supernode.restart_backoff_initial
                return
            self.last_exit = describe_exit(code)
            self._kill_group(self.proc.pid, signal.SIGKILL)  # leftover superexec/clientapp
            self.proc, self.registered = None, False
            self.next_start = now + self.backoff
            self.log.warning("supernode_exited", code=code, reason=self.last_exit,
                             restart_in=round(self.backoff, 2))
            self.backoff = min(self.backoff * 2, self.cfg.supernode.restart_backoff_max)
            self.restarts += 1
        if now >= self.next_start:
            self.start()

    def start(self) -> None:
        for folder in (self.cfg.data_dir, self.cfg.cache_dir, Path(self.cfg.agent.state_dir) / "flwr"):
            Path(folder).mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env(),
            stdin=subprocess.DEVNULL, start_new_session=True, text=True, bufsize=1,
            errors="replace",
        )
        self.started_at = self.clock()
        self.log.info("supernode_started", pid=self.proc.pid, superlink=self.cfg.coordinator.superlink,
                      restarts=self.restarts)
        self._reader = threading.Thread(target=self._read_output, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read_output(self, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            line = ANSI.sub("", raw.rstrip("\n")).strip()
            if not line:
                continue
            if line.startswith("{") and line.endswith("}"):
                emit_raw(line)  # the ClientApp already logs JSON with agent/run/round ids
                continue
            if m := NODE_ID.search(line):
                self.node_id, self.registered = m.group(1), True
            elif "Connection successful" in line:
                self.registered = True
            self.log.info("supernode_output", line=line)

    @staticmethod
    def _kill_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, timeout: float) -> None:
        if self.proc is None:
            return
        pid = self.proc.pid
        self._kill_group(pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.log.warning("supernode_stop_timeout", seconds=timeout)
        self._kill_group(pid, signal.SIGKILL)
        self.proc.wait()
        self.log.info("supernode_stopped", code=self.proc.returncode)
