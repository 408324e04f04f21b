"""Coordinator -> Pi: a registered version's signed manifest is accepted by the agent's store."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fed_agent.model_store import ModelStore
from fed_coordinator.models.manifest import SigningKeyError, load_signing_key, signed_manifest
from fed_coordinator.models.registry import ModelRegistry

MODEL = b"TFL3" + os.urandom(2048)


def registry_with_one_model(root) -> ModelRegistry:
    registry = ModelRegistry(root)

    def build(folder):
        (folder / "model_int8.tflite").write_bytes(MODEL)
        (folder / "model_float32.tflite").write_bytes(MODEL * 2)
        return {"labels": ["head", "hardhat"], "campaign_id": "c1"}

    registry.register(build)
    return registry


def key_file(path, mode=0o600):
    key = Ed25519PrivateKey.generate()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(mode)
    return key


def test_the_agent_store_accepts_what_the_coordinator_signs(tmp_path):
    registry = registry_with_one_model(tmp_path / "models")
    key = key_file(tmp_path / "signing.key")
    signed = signed_manifest(registry, 1, load_signing_key(tmp_path / "signing.key"))
    assert signed.manifest.file.size == len(MODEL) and signed.manifest.campaign_id == "c1"
    store = ModelStore(tmp_path / "pi-models", key.public_key(), self_test=lambda path, manifest: None)
    body = signed.model_dump_json().encode()
    assert store.install(body, (registry.path(1) / "model_int8.tflite").read_bytes()).version == 1
    float32 = signed_manifest(registry, 1, load_signing_key(tmp_path / "signing.key"), kind="float32")
    assert float32.manifest.file.name == "model_float32.tflite" and float32.manifest.file.size == 2 * len(MODEL)


@pytest.mark.parametrize("problem, words", [
    ("open", "must be 0600"), ("missing", "No such file"), ("garbage", "signing key"),
])
def test_a_signing_key_that_cannot_be_used_is_named(tmp_path, problem, words):
    path = tmp_path / "signing.key"
    if problem == "open":
        key_file(path, 0o644)
    elif problem == "garbage":
        path.write_text("not a key")
        path.chmod(0o600)
    with pytest.raises(SigningKeyError, match=words):
        load_signing_key(path)
