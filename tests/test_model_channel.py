"""The champion reaches the Pi: a real fed-coordinator serves the signed model, a real
fed-agent fetches, verifies, self-tests and runs it, and reports it in its heartbeat.

No Flower training is needed for this: the models are registered directly in the
coordinator's registry (a tiny real TFLite classifier) and made champion in its state, as
the champion gate would. A tampered file is refused and the agent stays on its model;
making the earlier champion current again switches the Pi back.
"""

from __future__ import annotations

import pytest

from conftest import needs_agent_venv, wait_for
from model_fleet import ModelFleet, register

pytestmark = needs_agent_venv


@pytest.fixture
def fleet(tmp_path):
    fleet = ModelFleet(tmp_path, ["pi-test"], canary_minutes=0)
    yield fleet
    fleet.stop()


def test_champion_fetched_verified_run_and_reported_then_a_tampered_one_refused(fleet, tflite_model):
    state, registry = fleet.state, fleet.registry
    v1 = register(registry, tflite_model)
    state.model_recorded(v1, None, 0.9, "champion", "test")
    state.set_champion(v1)
    model = fleet.wait_running("pi-test", v1)
    assert model["desired_version"] == v1
    assert (fleet.tmp / "pi-test" / "state" / "models" / "current" / "model.tflite").read_bytes() == tflite_model
    assert wait_for(lambda: [s for s in fleet.sockets["pi-test"].lines("STATUS=") if "model v1 ok" in s], 20,
                    what="STATUS with the model")
    fleet.wait_rollout(v1, "complete")  # the canary window is 0 here

    v2 = register(registry, tflite_model + b"")  # same bytes, new version: then tamper with it
    (registry.path(v2) / "model_int8.tflite").write_bytes(tflite_model[:-1] + b"\x00")
    state.set_champion(v2)
    refused = wait_for(lambda: (m := fleet.running_model("pi-test")) and m["state"] == "failed" and m, 40,
                       what="the tampered v2 refused")
    assert refused["version"] == v1 and refused["desired_version"] == v2 and "sha256" in refused["reason"]
    assert fleet.current_folder("pi-test") == "v0001"

    # The canary failed: the rollout halts and the desired version is v1 again.
    assert fleet.wait_running("pi-test", v1, timeout=15)["desired_version"] == v1
    events = fleet.agents["pi-test"].events()
    assert any(e["event"] == "model_refused" and "sha256" in e["reason"] for e in events)
