"""A real champion (tests/champion_harness.py) is registered with a temperature per file kind
and its ECE before and after, and a Pi running it reports the calibrated confidences."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from agent_harness import AGENT_BIN, token_file, write_config
from champion_harness import SERVER_TEST, build_champion, install_on_agent
from conftest import free_port, needs_agent_venv, needs_shared
from fedapp.calibration import TEMPERATURE_RANGE, calibrated, ece_bins, expected_calibration_error
from fed_coordinator.models.server_folder import model_outputs, split_server_folder

pytestmark = needs_shared


@pytest.fixture(scope="module")
def champion(tmp_path_factory, agent_artifacts):
    return build_champion(tmp_path_factory.mktemp("champion"), agent_artifacts)


def test_the_champion_is_registered_with_its_calibration(champion):
    registry, version = champion
    meta = registry.metadata(version)
    section = meta["calibration"]
    split = split_server_folder(SERVER_TEST, meta["labels"])
    assert section["method"] == "temperature" and section["split"]["skipped"] is None
    assert (section["split"]["calibration_images"], section["split"]["gate_images"]) == (9, 18)
    for kind, name in (("float32", "model_float32.tflite"), ("int8", "model_int8.tflite")):
        fitted = section[kind]
        assert TEMPERATURE_RANGE[0] <= fitted["temperature"] <= TEMPERATURE_RANGE[1]
        gate = fitted["gate"]
        assert gate["images"] == 18 and gate["ece_bins"] == ece_bins(18)
        # the recorded "after" is what the shipped file's outputs give with that temperature
        outputs = model_outputs(registry.path(version) / name, split.gate)
        truth = [f.label for f in split.gate]
        after = calibrated(outputs, fitted["temperature"], fitted["probability_floor"])
        assert gate["after"]["ece"] == pytest.approx(
            expected_calibration_error(after, truth, gate["ece_bins"]), abs=1e-6)
        assert gate["before"]["ece"] == pytest.approx(
            expected_calibration_error(outputs, truth, gate["ece_bins"]), abs=1e-6)
        print(f"\n{kind}: T={fitted['temperature']}, gate ECE {gate['before']['ece']} -> "
              f"{gate['after']['ece']}, calibration ECE {fitted['calibration']['before']['ece']} -> "
              f"{fitted['calibration']['after']['ece']}")


@needs_agent_venv
def test_a_pi_running_the_champion_reports_calibrated_confidences(champion, tmp_path):
    registry, version = champion
    meta = registry.metadata(version)
    installed = install_on_agent(registry, version, tmp_path / "state", kind="int8")
    fitted = meta["calibration"]["int8"]
    assert installed.calibration is not None and installed.calibration.temperature == fitted["temperature"]
    gate = split_server_folder(SERVER_TEST, meta["labels"]).gate
    images = [str(f.path) for f in gate]
    cfg = write_config(tmp_path / "agent.yaml", tmp_path / "state", f"127.0.0.1:{free_port()}",
                       "http://127.0.0.1:9/api/v1/heartbeat", token_file(tmp_path), free_port())
    proc = subprocess.run([str(AGENT_BIN / "fed-agent"), "-c", str(cfg), "predict", *images, "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    on_pi = np.array([p["score"] for p in json.loads(proc.stdout)["predictions"]])
    raw = model_outputs(registry.path(version) / "model_int8.tflite", gate)
    want = calibrated(raw, fitted["temperature"], fitted["probability_floor"]).max(axis=1)
    assert np.abs(on_pi - want).max() < 0.01, list(zip(on_pi, want))
    assert on_pi.mean() == pytest.approx(fitted["gate"]["after"]["mean_confidence"], abs=0.005)
    # not the raw int8 answers (0.9961 for a saturated photo), unless T happened to be 1
    assert np.abs(on_pi - raw.max(axis=1)).max() > 1e-3
