"""The staged rollout between real processes: a fed-coordinator and two fed-agents.

The canary (pi-a: one agent by default, the first by name) gets each champion first, pi-b
only after the canary window; a broken model served to the canary (a corrupted file, a wrong
hash, a bad signature) halts the rollout with the canary's reason and no Pi switches;
`fedctl rollback` puts every Pi back on the previous version within two heartbeat intervals.
"""

from __future__ import annotations

import time

import pytest

from conftest import needs_agent_venv
from coordinator_harness import fedctl
from model_fleet import HEARTBEAT_SECONDS, ModelFleet, register, signing_key_pair

pytestmark = needs_agent_venv
WINDOW_SECONDS = 10


@pytest.fixture
def windowed_fleet(tmp_path):
    fleet = ModelFleet(tmp_path, ["pi-a", "pi-b"], canary_minutes=WINDOW_SECONDS / 60)
    yield fleet
    fleet.stop()


@pytest.fixture
def fleet(tmp_path):
    fleet = ModelFleet(tmp_path, ["pi-a", "pi-b"], canary_minutes=0)
    yield fleet
    fleet.stop()


def rollout(fleet: ModelFleet) -> dict:
    return fleet.fedctl("rollout")


def promote(fleet: ModelFleet, version: int) -> None:
    proc = fedctl(fleet.cfg, "promote", str(version))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def roll_out_through_the_canary(fleet: ModelFleet, version: int, before: int | None) -> None:
    promote(fleet, version)
    fleet.wait_running("pi-a", version)
    while (current := rollout(fleet)["rollout"])["stage"] == "canary":
        # Until the canary window has passed, pi-b must not have been offered the new version.
        beat = fleet.running_model("pi-b")
        assert beat is None or beat["version"] == before, f"pi-b switched during the canary stage: {beat}"
        time.sleep(1)
    assert current["version"] == version and current["stage"] == "complete", current
    assert current["finished_at"] - current["canary_ok_since"] >= WINDOW_SECONDS
    assert current["canaries"] == ["pi-a"]
    fleet.wait_running("pi-b", version, timeout=3 * HEARTBEAT_SECONDS)


def test_canary_first_the_other_after_the_window_then_fedctl_rollback(windowed_fleet, tflite_model):
    fleet = windowed_fleet
    v1, v2 = register(fleet.registry, tflite_model), register(fleet.registry, tflite_model)
    roll_out_through_the_canary(fleet, v1, None)
    roll_out_through_the_canary(fleet, v2, v1)
    table = fedctl(fleet.cfg, "rollout").stdout
    assert "rollout: v2 complete (previous v1)" in table and "canaries pi-a" in table
    assert {row["name"]: (row["desired"], row["running"]) for row in rollout(fleet)["agents"]} == {
        "pi-a": (v2, v2), "pi-b": (v2, v2)}

    asked = time.monotonic()
    proc = fedctl(fleet.cfg, "rollback")
    assert proc.returncode == 0 and "every agent's desired model is now that version" in proc.stdout, proc.stdout
    for name in ("pi-a", "pi-b"):  # both at once: a rollback has no canary stage
        fleet.wait_running(name, v1, timeout=2 * HEARTBEAT_SECONDS + 2 - (time.monotonic() - asked))
    assert {fleet.current_folder(name) for name in ("pi-a", "pi-b")} == {"v0001"}
    switched = [e for e in fleet.agents["pi-b"].events() if e.get("event") == "model_switched"]
    assert switched[-1].get("source") == "kept on disk"  # the previous model was still there: no download


def test_a_broken_model_served_to_the_canary_halts_the_rollout_and_no_pi_switches(fleet, tflite_model, tmp_path):
    v1 = register(fleet.registry, tflite_model)
    promote(fleet, v1)
    for name in ("pi-a", "pi-b"):
        fleet.wait_running(name, v1)
    fleet.wait_rollout(v1, "complete")

    corrupted = register(fleet.registry, tflite_model)  # cut short: another size than the manifest's
    (fleet.registry.path(corrupted) / "model_int8.tflite").write_bytes(tflite_model[: len(tflite_model) // 2])
    wrong_hash = register(fleet.registry, tflite_model)  # same size, one byte changed
    (fleet.registry.path(wrong_hash) / "model_int8.tflite").write_bytes(tflite_model[:-1] + b"\x00")
    cases = [(corrupted, "the manifest says"), (wrong_hash, "sha256")]
    for version, words in cases:
        promote(fleet, version)
        halted = fleet.wait_rollout(version, "halted")
        assert halted["reason"].startswith(f"canary pi-a failed v{version}: model file") and words in halted["reason"]
        assert_fleet_stays_on(fleet, v1)

    other_private, _ = signing_key_pair(tmp_path, "not-the-provisioned-key")
    fleet.restart_coordinator(other_private)  # manifests now signed with a key no Pi trusts
    bad_signature = register(fleet.registry, tflite_model)
    promote(fleet, bad_signature)
    halted = fleet.wait_rollout(bad_signature, "halted")
    assert "manifest signature does not verify" in halted["reason"]
    assert_fleet_stays_on(fleet, v1)
    assert fleet.fedctl("rollout")["agents"][1]["desired"] == v1  # pi-b never offered it


def assert_fleet_stays_on(fleet: ModelFleet, version: int) -> None:
    for name in ("pi-a", "pi-b"):
        fleet.wait_running(name, version, timeout=3 * HEARTBEAT_SECONDS)  # pi-a back from "failed"
        assert fleet.current_folder(name) == f"v{version:04d}"
    assert not [e for e in fleet.agents["pi-b"].events() if e.get("event") == "model_refused"]
