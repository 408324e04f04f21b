"""Flower's deployment-engine processes and CLI, driven as subprocesses.

We never import Flower's server internals: the SuperLink is a child process started with
`--database` (so a restart keeps node registrations), and runs are driven through the `flwr`
CLI, whose exit status is not trusted (`flwr run` exits 0 even when the run fails): the real
status always comes from `flwr ls`.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BIN_DIR = Path(sys.executable).parent


def flower_env(flwr_home: Path, bin_dir: Path = BIN_DIR) -> dict[str, str]:
    """Environment for Flower processes: our venv first on PATH (Flower spawns
    flower-superexec / flwr-serverapp / flwr-clientapp by name), offline switches on."""
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_HOME"] = str(flwr_home)
    env["FLWR_TELEMETRY_ENABLED"] = "0"
    env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def wait_http_ok(url: str, timeout: float, context: ssl.SSLContext | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:  # noqa: BLE001 - keep polling until the deadline
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} not healthy after {timeout:.0f}s: {last}")


@dataclass
class SuperLink:
    """A `flower-superlink` child with its state (SQLite) under state_dir."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 9093
    extra_args: list[str] = field(default_factory=list)
    insecure: bool = True
    # False inside the service: the SuperLink then shares the service's process group, so
    # whatever kills the service (systemd's cgroup, a test's killpg) takes it down too.
    new_session: bool = True
    proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(BIN_DIR / "flower-superlink"), "--host", self.host, "--port", str(self.port),
               "--database", str(self.state_dir / "superlink.db"),
               "--disable-runtime-dependency-installation"]
        if self.insecure:
            cmd.append("--insecure")
        return cmd + self.extra_args

    def start(self, timeout: float = 60.0) -> "SuperLink":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "superlink.log", "ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT,
            env=flower_env(self.state_dir / "flwr-superlink"), start_new_session=self.new_session,
        )
        log.close()
        if self.insecure:
            wait_http_ok(f"http://{self.address}/health", timeout)
        else:
            # Our own child on loopback: only "is it serving" matters here, not who it is.
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            wait_http_ok(f"https://{self.address}/health", timeout, ctx)
        return self

    def _signal(self, sig: int) -> None:
        if self.new_session:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc and self.proc.poll() is None:
            self._signal(15)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(9)
                self.proc.wait()


class FlwrError(RuntimeError):
    pass


@dataclass
class FlwrCli:
    """The `flwr` CLI bound to one SuperLink connection in its own FLWR_HOME."""

    home: Path
    address: str
    insecure: bool = True
    root_certificates: Path | None = None
    name: str = "fleet"

    def __post_init__(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        lines = ["[superlink]", f'default = "{self.name}"', "", f"[superlink.{self.name}]",
                 f'address = "{self.address}"']
        if self.insecure:
            lines.append("insecure = true")
        elif self.root_certificates:
            lines.append(f'root-certificates = "{self.root_certificates}"')
        (self.home / "config.toml").write_text("\n".join(lines) + "\n")

    def _json(self, args: list[str], timeout: float = 120.0) -> dict:
        # cwd: flwr looks for an app's pyproject.toml in the working directory, which may be
        # one the service user cannot read (e.g. /root when run by hand).
        proc = subprocess.run(
            [str(BIN_DIR / "flwr"), *args, "--format", "json"], capture_output=True, text=True,
            env=flower_env(self.home), timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.home,
        )
        try:
            data = json.loads(proc.stdout)
        except json.JSONDecodeError as exc:
            raise FlwrError(f"flwr {args[0]}: no JSON (exit {proc.returncode}): "
                            f"{proc.stdout[-500:]} {proc.stderr[-500:]}") from exc
        if not data.get("success", True):
            raise FlwrError(f"flwr {args[0]}: {data.get('error-message', data)}")
        return data

    def run(self, app_dir: Path, run_config: dict) -> int:
        cfg = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        data = self._json(["run", str(app_dir), self.name, "--run-config", cfg], timeout=300)
        return int(data["run-id"])

    def status(self, run_id: int) -> dict:
        data = self._json(["ls", self.name, "--run-id", str(run_id)])
        runs = data.get("runs", [])
        if not runs:
            raise FlwrError(f"run {run_id} not listed by the SuperLink")
        return runs[0]

    def stop(self, run_id: int) -> None:
        self._json(["stop", str(run_id), self.name])

    def supernodes(self) -> list[dict]:
        return self._json(["supernode", "ls", self.name]).get("nodes", [])
