"""The registry never shows a half-written model."""

import json

import pytest

from fed_coordinator.models.registry import ModelRegistry


def write_model(folder, payload=b"x" * 1000):
    (folder / "model_float32.tflite").write_bytes(payload)
    return {"labels": ["head", "hardhat"]}


def test_versions_increase_and_metadata_has_hashes(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1, p1 = reg.register(write_model)
    v2, p2 = reg.register(lambda f: write_model(f, b"y" * 10))
    assert (v1, v2) == (1, 2) and reg.latest() == p2
    meta = json.loads((p2 / "metadata.json").read_text())
    assert meta["files"]["model_float32.tflite"]["bytes"] == 10
    assert len(meta["files"]["model_float32.tflite"]["sha256"]) == 64


def test_crash_during_build_leaves_nothing_visible(tmp_path):
    reg = ModelRegistry(tmp_path)
    reg.register(write_model)

    def crash(folder):
        write_model(folder)
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError):
        reg.register(crash)
    assert reg.versions() == [1]
    assert not list(tmp_path.glob(".incoming-*"))


def test_leftover_incoming_folder_is_ignored_and_cleaned(tmp_path):
    reg = ModelRegistry(tmp_path)
    # what a SIGKILL in the middle of a registration leaves behind
    half = tmp_path / ".incoming-v0001"
    half.mkdir()
    (half / "model_float32.tflite").write_bytes(b"partial")
    (tmp_path / "v0009").mkdir()  # a folder without metadata.json is not a model
    assert reg.versions() == [] and reg.latest() is None
    version, _ = reg.register(write_model)
    assert not half.exists() and reg.versions() == [version]
