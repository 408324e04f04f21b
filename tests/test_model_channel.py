"""The champion reaches the Pi: a real fed-coordinator serves the signed model, a real
fed-agent fetches, verifies, self-tests and runs it, and reports it in its heartbeat.

No Flower training is needed for this: the models are registered directly in the
coordinator's registry (a tiny real TFLite classifier) and made champion in its state, as
the champion gate would. A tampered file is refused and the agent stays on its model;
making the earlier champion current again switches the Pi back.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_harness import AgentProcess, NotifySocket, write_config
from conftest import WEIGHTS, free_port, needs_agent_venv, wait_for
from coordinator_harness import CoordinatorProcess, fedctl, write_coordinator_config
from fed_coordinator.models.registry import ModelRegistry
from fed_coordinator.state import State

pytestmark = needs_agent_venv


def register(registry: ModelRegistry, data: bytes) -> int:
    def build(folder):
        (folder / "model_int8.tflite").write_bytes(data)
        return {"labels": ["head", "hardhat"]}

    return registry.register(build)[0]


@pytest.fixture
def fleet(tmp_path, tflite_model):
    key = Ed25519PrivateKey.generate()
    private, public = tmp_path / "manifest-signing.key", tmp_path / "manifest-signing.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    api_port = free_port()
    cfg = write_coordinator_config(tmp_path / "coordinator.yaml", tmp_path / "state", tmp_path, WEIGHTS,
                                   free_port(), api_port, rollout__signing_key_file=str(private))
    coord = CoordinatorProcess(cfg, tmp_path / "coordinator.log")
    coord.wait_ready()
    assert fedctl(cfg, "agent-add", "pi-test", "--token-file", str(tmp_path / "token")).returncode == 0
    agent_cfg = write_config(tmp_path / "agent.yaml", tmp_path / "agent-state", f"127.0.0.1:{free_port()}",
                             f"http://127.0.0.1:{api_port}/api/v1/heartbeat", tmp_path / "token", free_port(),
                             heartbeat__interval=5, model__public_key_file=str(public))
    notify = NotifySocket(tmp_path / "notify.sock")
    agent = AgentProcess(agent_cfg, notify, tmp_path / "agent.log")
    state, registry = State(tmp_path / "state" / "coordinator.db"), ModelRegistry(tmp_path / "state" / "models")
    yield {"state": state, "registry": registry, "agent": agent, "notify": notify, "cfg": cfg,
           "agent_state": tmp_path / "agent-state"}
    agent.stop()
    notify.close()
    coord.stop()


def running_model(fleet_env) -> dict | None:
    rows = json.loads(fedctl(fleet_env["cfg"], "--json", "fleet").stdout)["agents"]
    beat = fleet_env["state"].agents()[0]["last_payload"]
    return json.loads(beat).get("running_model") if beat and rows else None


def wait_running(fleet_env, version: int, state: str = "ok", timeout: float = 40) -> dict:
    return wait_for(lambda: (m := running_model(fleet_env)) and m["version"] == version and m["state"] == state and m,
                    timeout, what=f"the heartbeat to report v{version} {state}")


def test_champion_fetched_verified_run_and_reported_then_a_tampered_one_refused(fleet, tflite_model):
    state, registry = fleet["state"], fleet["registry"]
    v1 = register(registry, tflite_model)
    state.model_recorded(v1, None, 0.9, "champion", "test")
    state.set_champion(v1)
    model = wait_running(fleet, v1)
    assert model["desired_version"] == v1
    assert (fleet["agent_state"] / "models" / "current" / "model.tflite").read_bytes() == tflite_model
    assert wait_for(lambda: [s for s in fleet["notify"].lines("STATUS=") if "model v1 ok" in s], 20,
                    what="STATUS with the model")

    v2 = register(registry, tflite_model + b"")  # same bytes, new version: then tamper with it
    (registry.path(v2) / "model_int8.tflite").write_bytes(tflite_model[:-1] + b"\x00")
    state.set_champion(v2)
    refused = wait_for(lambda: (m := running_model(fleet)) and m["state"] == "failed" and m, 40,
                       what="the tampered v2 refused")
    assert refused["version"] == v1 and refused["desired_version"] == v2 and "sha256" in refused["reason"]
    assert (fleet["agent_state"] / "models" / "current").resolve().name == "v0001"

    state.set_champion(v1)  # what `fedctl rollback` does to the desired version
    assert wait_running(fleet, v1, timeout=15)["desired_version"] == v1
    events = [json.loads(line) for line in (fleet["agent_state"].parent / "agent.log").read_text().splitlines()
              if line.startswith("{")]
    assert any(e["event"] == "model_refused" and "sha256" in e["reason"] for e in events)
