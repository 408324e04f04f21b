"""A real fed-coordinator with a manifest signing key and real fed-agents that fetch models.

Why no Flower training here: the models are registered straight into the coordinator's
registry (the tiny real TFLite classifier of conftest's `tflite_model`) and made champion in
its state, as the champion gate would; what is under test is the channel and the rollout
between the processes. Agents point at a SuperLink port nobody listens on, unless
`connect_superlink` (then campaigns run for real, on the photos under `data_dir`).
"""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_harness import AgentProcess, NotifySocket, write_config
from conftest import WEIGHTS, free_port, wait_for
from coordinator_harness import CoordinatorProcess, fedctl, write_coordinator_config
from fed_coordinator.models.registry import ModelRegistry
from fed_coordinator.state import State

HEARTBEAT_SECONDS = 5


def signing_key_pair(folder: Path, name: str = "manifest-signing") -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def register(registry: ModelRegistry, data: bytes) -> int:
    def build(folder):
        (folder / "model_int8.tflite").write_bytes(data)
        return {"labels": ["head", "hardhat"]}

    return registry.register(build)[0]


class ModelFleet:
    """The coordinator (restartable with another signing key) and one agent per name."""

    def __init__(self, tmp_path: Path, agents: list[str], data_dir: Path | None = None,
                 connect_superlink: bool = False, campaign: dict | None = None, agent_settings: dict | None = None,
                 **rollout) -> None:
        self.tmp, self.data_dir, self.connect_superlink = tmp_path, data_dir or tmp_path, connect_superlink
        self.campaign, self.rollout, self.agent_settings = campaign or {}, rollout, agent_settings or {}
        self.private, self.public = signing_key_pair(tmp_path)
        self.api_port, self.superlink_port = free_port(), free_port()
        self.cfg = self.coordinator_config(self.private)
        self.coordinator = CoordinatorProcess(self.cfg, tmp_path / "coordinator.log")
        self.coordinator.wait_ready()
        self.state = State(tmp_path / "state" / "coordinator.db")
        self.registry = ModelRegistry(tmp_path / "state" / "models")
        self.agents: dict[str, AgentProcess] = {}
        self.sockets: dict[str, NotifySocket] = {}
        for name in agents:
            self.add_agent(name)

    def coordinator_config(self, signing_key: Path) -> Path:
        overrides = {f"rollout__{key}": value for key, value in self.rollout.items()}
        overrides.update({f"campaign__{key}": value for key, value in self.campaign.items()})
        return write_coordinator_config(self.tmp / "coordinator.yaml", self.tmp / "state", self.data_dir, WEIGHTS,
                                        self.superlink_port, self.api_port, rollout__signing_key_file=str(signing_key),
                                        **overrides)

    def add_agent(self, name: str) -> None:
        folder = self.tmp / name
        folder.mkdir(exist_ok=True)  # a subclass may have put something there (a log FIFO)
        assert fedctl(self.cfg, "agent-add", name, "--token-file", str(folder / "token")).returncode == 0
        superlink = self.superlink_port if self.connect_superlink else free_port()
        cfg = write_config(folder / "agent.yaml", folder / "state", f"127.0.0.1:{superlink}",
                           f"http://127.0.0.1:{self.api_port}/api/v1/heartbeat", folder / "token", free_port(),
                           agent__name=name, heartbeat__interval=HEARTBEAT_SECONDS,
                           model__public_key_file=str(self.public), **self.agent_settings)
        self.sockets[name] = NotifySocket(folder / "notify.sock")
        self.agents[name] = AgentProcess(cfg, self.sockets[name], folder / "agent.log")

    def restart_coordinator(self, signing_key: Path) -> None:
        self.coordinator.stop()
        self.coordinator = CoordinatorProcess(self.coordinator_config(signing_key), self.tmp / "coordinator.log")
        self.coordinator.wait_ready()

    def running_model(self, agent: str) -> dict | None:
        rows = {row["name"]: row for row in self.state.agents()}
        payload = rows[agent]["last_payload"]
        return json.loads(payload).get("running_model") if payload else None

    def wait_running(self, agent: str, version: int, state: str = "ok", timeout: float = 40) -> dict:
        return wait_for(lambda: (m := self.running_model(agent)) and m["version"] == version
                        and m["state"] == state and m, timeout, what=f"{agent} to report v{version} {state}")

    def wait_rollout(self, version: int, stage: str, timeout: float = 40) -> dict:
        """The rollout record (as `fedctl rollout --json` shows it) once it is at `stage`."""
        return wait_for(lambda: (r := self.fedctl("rollout")["rollout"]) and r["version"] == version
                        and r["stage"] == stage and r, timeout, what=f"the rollout of v{version} {stage}")

    def current_folder(self, agent: str) -> str:
        return (self.tmp / agent / "state" / "models" / "current").resolve().name

    def fedctl(self, *args: str) -> dict:
        proc = fedctl(self.cfg, "--json", *args)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return json.loads(proc.stdout)

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        for sock in self.sockets.values():
            sock.close()
        self.coordinator.stop()
