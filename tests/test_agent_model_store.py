"""The Pi's model store: only a verified, self-tested model becomes current; rollback is a
rename. Uses a real (tiny) TFLite classifier and the real TFLite interpreter."""

from __future__ import annotations

import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fed_agent.model_store import ModelStore
from fed_common.manifest import ManifestRejected, ModelFile, ModelManifest, sign

KEY = Ed25519PrivateKey.generate()


def signed(data: bytes, version: int, key=KEY, **file_changes) -> bytes:
    file = {"name": "model_int8.tflite", "kind": "int8", "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), **file_changes}
    manifest = ModelManifest(version=version, labels=["head", "hardhat"], created_at=1.0, file=ModelFile(**file))
    return sign(manifest, key).model_dump_json().encode()


def test_install_then_a_newer_one_keeps_the_previous_for_rollback(tmp_path, tflite_model):
    store = ModelStore(tmp_path / "models", KEY.public_key())
    assert store.running() is None
    assert store.install(signed(tflite_model, 1), tflite_model).version == 1
    store.install(signed(tflite_model, 2), tflite_model)
    assert store.running().version == 2 and store.previous().version == 1
    assert (tmp_path / "models" / "current" / "model.tflite").read_bytes() == tflite_model
    assert store.switch_to(1).version == 1 and store.running().version == 1


CASES = {  # what the canary is served -> words in the refusal
    "corrupted file": (lambda m: (signed(m, 2), m[:100] + bytes(len(m) - 100)), "sha256"),
    "wrong size": (lambda m: (signed(m, 2), m + b"\0"), "bytes, the manifest says"),
    "bad signature": (lambda m: (signed(m, 2, key=Ed25519PrivateKey.generate()), m), "signature does not verify"),
    "signed but broken model": (lambda m: (signed(b"\0" * 4096, 2), b"\0" * 4096), "does not load or run"),
    "unsigned": (lambda m: (json.dumps({"manifest": json.loads(signed(m, 2))["manifest"]}).encode(), m),
                 "at 'signature'"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_model_is_refused_and_the_current_one_stays(tmp_path, tflite_model, case):
    store = ModelStore(tmp_path / "models", KEY.public_key())
    store.install(signed(tflite_model, 1), tflite_model)
    make, words = CASES[case]
    body, data = make(tflite_model)
    with pytest.raises(ManifestRejected, match=words):
        store.install(body, data)
    assert store.running().version == 1 and store.previous() is None
    assert not store.folder(2).exists()
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]


def test_a_model_for_other_labels_is_refused(tmp_path, tflite_model):
    store = ModelStore(tmp_path / "models", KEY.public_key())
    data = tflite_model
    manifest = ModelManifest(version=1, labels=["head", "hardhat", "cap"], created_at=1.0,
                             file=ModelFile(name="m.tflite", kind="float32", size=len(data),
                                            sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(ManifestRejected, match="answers 2 values .* for 3 labels"):
        store.install(sign(manifest, KEY).model_dump_json().encode(), data)
    assert store.running() is None
