"""A SuperLink and SuperNodes on loopback, for `make demo` and the integration tests.

SuperNodes run from the agent's environment (AGENT_BIN), which has no TensorFlow: Flower
spawns `flower-superexec` and `flwr-clientapp` by name from PATH, so that venv's bin folder
goes first on the SuperNodes' PATH.
"""

from __future__ import annotations

import os
import socket
import subprocess
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from fed_common import logs
from fed_coordinator.campaigns.runner import FEDAPP_DIR, CampaignRunner
from fed_coordinator.config import CampaignSection
from fed_coordinator.flower import FlwrCli, SuperLink, flower_env
from fed_coordinator.models.registry import ModelRegistry

REPO = Path(__file__).resolve().parents[2]
AGENT_BIN = Path(os.environ.get("FED_AGENT_BIN", REPO / ".venv-agent" / "bin"))


@dataclass
class SuperNodeProcess:
    name: str
    superlink: str
    data_dir: Path
    state_dir: Path
    port: int
    bin_dir: Path = AGENT_BIN
    proc: subprocess.Popen | None = None
    extra_env: dict | None = None

    def start(self) -> "SuperNodeProcess":
        self.state_dir.mkdir(parents=True, exist_ok=True)
        node_config = (f'data-dir="{self.data_dir}" cache-dir="{self.state_dir / "cache"}" '
                       f'agent-name="{self.name}"')
        env = flower_env(self.state_dir / "flwr", self.bin_dir)
        env.update(self.extra_env or {})
        log = open(self.state_dir / "supernode.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.bin_dir / "flower-supernode"), "--insecure", "--superlink", self.superlink,
             "--port", str(self.port), "--node-config", node_config],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )
        log.close()
        return self

    def stop(self, sig: int = 15) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalFleet:
    link: SuperLink
    nodes: list[SuperNodeProcess]
    runner: CampaignRunner


@contextmanager
def local_fleet(data_root: Path, state_dir: Path, clients: int = 2,
                nodes: list[tuple[str, Path]] | None = None, app_dir: Path = FEDAPP_DIR):
    """A SuperLink and SuperNodes on loopback (by default one per dataset_clientN, named
    pi-N; or the given (name, data folder) pairs); all stopped on exit. `app_dir` is the
    Flower App each campaign submits."""
    log = logs.get_logger(component="demo")
    wanted = nodes or [(f"pi-{i}", data_root / f"dataset_client{i}") for i in range(1, clients + 1)]
    with ExitStack() as stack:
        link = SuperLink(state_dir / "superlink", port=free_port()).start()
        stack.callback(link.stop)
        started = []
        for i, (name, data_dir) in enumerate(wanted, start=1):
            node = SuperNodeProcess(name, link.address, data_dir, state_dir / f"agent-{i}", free_port()).start()
            stack.callback(node.stop)
            started.append(node)
        cli = FlwrCli(state_dir / "flwr-cli", link.address)
        runner = CampaignRunner(state_dir, cli, ModelRegistry(state_dir / "models"), log, app_dir=app_dir)
        yield LocalFleet(link, started, runner)


def run_local_campaign(data_root: Path, state_dir: Path, settings: CampaignSection,
                       clients: int = 2, on_event=lambda e: None):
    """Start a local fleet, run one campaign, stop everything."""
    with local_fleet(data_root, state_dir, clients) as fleet:
        return fleet.runner.run(settings, on_event)
