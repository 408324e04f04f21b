"""A model's calibration travels in its signed manifest, and the Pi's confidence follows it.

Old manifests (signed before `calibration` existed) must still verify and still be used as
they were; a manifest with one must change every confidence the agent reports.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_harness import AGENT_BIN, token_file, write_config
from conftest import free_port, needs_agent_venv
from fed_agent.classifier import ModelClassifier
from fed_agent.model_store import ModelStore
from fed_common.manifest import Calibration, ManifestRejected, ModelFile, ModelManifest, sign, verified
from fedapp.calibration import calibrated
from fed_coordinator.models.manifest import model_manifest
from fed_coordinator.models.registry import ModelRegistry

KEY = Ed25519PrivateKey.generate()
HOT = Calibration(temperature=4.0, probability_floor=1 / 512)


def manifest_for(data: bytes, calibration=None, version: int = 2) -> ModelManifest:
    return ModelManifest(version=version, labels=["head", "hardhat"], created_at=1.0, calibration=calibration,
                         file=ModelFile(name="model_int8.tflite", kind="int8", size=len(data),
                                        sha256=hashlib.sha256(data).hexdigest()))


def test_a_calibrated_manifest_verifies_and_keeps_its_temperature():
    body = sign(manifest_for(b"model", HOT), KEY).model_dump_json()
    assert verified(body, KEY.public_key()).calibration == HOT
    tampered = json.loads(body)
    tampered["manifest"]["calibration"]["temperature"] = 1.0
    with pytest.raises(ManifestRejected, match="does not verify"):
        verified(json.dumps(tampered), KEY.public_key())


def test_a_manifest_signed_before_calibration_existed_still_verifies():
    """The bytes an agent of the previous release signed and checked: no calibration key."""
    old = {"schema_version": 1, "version": 2, "labels": ["head", "hardhat"], "campaign_id": None,
           "created_at": 1.0, "input": {"height": 160, "width": 160, "channels": 3, "dtype": "float32"},
           "file": {"name": "model_int8.tflite", "kind": "int8", "size": 5,
                    "sha256": hashlib.sha256(b"model").hexdigest()}}
    canonical = json.dumps(old, sort_keys=True, separators=(",", ":")).encode()
    body = json.dumps({"manifest": old, "signature": base64.b64encode(KEY.sign(canonical)).decode()})
    got = verified(body, KEY.public_key())
    assert got.calibration is None and got.canonical() == canonical
    # and what the coordinator now sends for an uncalibrated model is what old agents accept
    assert "calibration" not in sign(manifest_for(b"model"), KEY).model_dump_json()


@pytest.mark.parametrize("temperature", [0.01, 25.0])
def test_a_temperature_out_of_bounds_is_refused(temperature):
    signed = json.loads(sign(manifest_for(b"model", HOT), KEY).model_dump_json())
    signed["manifest"]["calibration"]["temperature"] = temperature
    with pytest.raises(ManifestRejected, match="at 'manifest.calibration.temperature'"):
        verified(json.dumps(signed), KEY.public_key())


def test_each_file_kind_gets_its_own_temperature_from_the_registry(tmp_path):
    registry = ModelRegistry(tmp_path)
    fitted = {"method": "temperature", "int8": {"temperature": 1.7, "probability_floor": 1 / 512},
              "float32": {"temperature": 2.5, "probability_floor": 1e-12}}

    def build(folder, calibration):
        for name in ("model_int8.tflite", "model_float32.tflite"):
            (folder / name).write_bytes(b"TFL3" + name.encode())
        return {"labels": ["head", "hardhat"], **({"calibration": calibration} if calibration else {})}

    registry.register(lambda folder: build(folder, fitted))
    registry.register(lambda folder: build(folder, {"method": "none", "reason": "too small"}))
    registry.register(lambda folder: build(folder, None))  # registered before calibration existed
    assert model_manifest(registry, 1, "int8").calibration == Calibration(temperature=1.7, probability_floor=1 / 512)
    assert model_manifest(registry, 1, "float32").calibration.temperature == 2.5
    assert model_manifest(registry, 2).calibration is None and model_manifest(registry, 3).calibration is None


def test_the_agents_confidence_is_calibrated_by_its_manifest(tmp_path, tflite_model):
    model = tmp_path / "model.tflite"
    model.write_bytes(tflite_model)
    pixels = np.tile(np.array([200.0, 30.0, 90.0], np.float32), (160, 160, 1))
    raw = ModelClassifier(model, manifest_for(tflite_model)).classify(pixels)
    hot = ModelClassifier(model, manifest_for(tflite_model, HOT)).classify(pixels)
    scores = np.array([raw.scores["head"], raw.scores["hardhat"]])
    want = calibrated(scores, 4.0, 1 / 512)
    assert hot.label == raw.label and hot.confidence != raw.confidence
    assert hot.confidence == pytest.approx(want.max(), abs=2e-4)
    assert sum(hot.scores.values()) == pytest.approx(1.0, abs=2e-4)


@needs_agent_venv
def test_fed_agent_predict_reports_the_calibrated_score(tmp_path, tflite_model):
    """The real console script in the agent venv, before and after a calibrated manifest."""
    cfg = write_config(tmp_path / "agent.yaml", tmp_path / "state", f"127.0.0.1:{free_port()}",
                       "http://127.0.0.1:9/api/v1/heartbeat", token_file(tmp_path), free_port())
    store = ModelStore(tmp_path / "state" / "models", KEY.public_key())
    image = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (120, 90), (200, 30, 90)).save(image)
    answers = []
    for version, calibration in ((1, None), (2, HOT)):
        store.install(sign(manifest_for(tflite_model, calibration, version), KEY).model_dump_json().encode(), tflite_model)
        proc = subprocess.run([str(AGENT_BIN / "fed-agent"), "-c", str(cfg), "predict", str(image), "--json"],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        answer = json.loads(proc.stdout)
        assert answer["model_version"] == version
        answers.append(answer["predictions"][0])
    raw, hot = answers
    assert hot["label"] == raw["label"]
    want = calibrated(np.array([raw["score"], 1 - raw["score"]]), 4.0, 1 / 512).max()
    assert hot["score"] == pytest.approx(want, abs=1e-3) and hot["score"] < raw["score"]
