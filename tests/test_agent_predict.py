"""`fed-agent predict`: the Pi's running model classifies images, label and score each."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image

from agent_harness import AGENT_BIN, token_file, write_config
from conftest import free_port, needs_agent_venv
from fed_agent.model_store import ModelStore
from fed_common.manifest import ModelFile, ModelManifest, sign

pytestmark = needs_agent_venv


def test_predict_names_label_and_score_per_image_and_the_unreadable_one(tmp_path, tflite_model):
    key = Ed25519PrivateKey.generate()
    manifest = ModelManifest(version=4, labels=["head", "hardhat"], created_at=1.0,
                             file=ModelFile(name="model_int8.tflite", kind="int8", size=len(tflite_model),
                                            sha256=hashlib.sha256(tflite_model).hexdigest()))
    ModelStore(tmp_path / "state" / "models", key.public_key()).install(
        sign(manifest, key).model_dump_json().encode(), tflite_model)
    cfg = write_config(tmp_path / "agent.yaml", tmp_path / "state", f"127.0.0.1:{free_port()}",
                       "http://127.0.0.1:9/api/v1/heartbeat", token_file(tmp_path), free_port())
    images = []
    for i, colour in enumerate([(200, 30, 30), (20, 40, 220)]):
        buf = io.BytesIO()
        Image.new("RGB", (120, 90), colour).save(buf, "JPEG")
        images.append(tmp_path / f"photo{i}.jpg")
        images[-1].write_bytes(buf.getvalue())
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    proc = subprocess.run([str(AGENT_BIN / "fed-agent"), "-c", str(cfg), "predict", *map(str, images),
                           str(tmp_path / "broken.jpg"), "--json"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # one image could not be read
    assert "broken.jpg: error:" in proc.stderr and "not a readable image" in proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["model_version"] == 4 and [p["image"] for p in answer["predictions"]] == list(map(str, images))
    assert all(p["label"] in ("head", "hardhat") and 0.5 <= p["score"] <= 1 for p in answer["predictions"])
    lines = subprocess.run([str(AGENT_BIN / "fed-agent"), "-c", str(cfg), "predict", str(images[0])],
                           capture_output=True, text=True, timeout=120)
    assert lines.returncode == 0 and lines.stdout.count("\t") == 2, lines.stderr
