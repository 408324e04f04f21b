"""The agent side serves a training message in a process where TensorFlow cannot be imported,
under each of its two TFLite backends (tflite-runtime and ai-edge-litert), with the same result."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from fed_common.files import sha256_file

from conftest import AGENT_BACKENDS, PHOTOS, REPO, backend_params, needs_shared

# The two backends run the same float32 graphs: measured here 0 to ~1e-7 apart after training.
WEIGHTS_TOLERANCE = 1e-5


@pytest.mark.parametrize("backend", backend_params())
def test_agent_venv_has_no_tensorflow(backend):
    code = "import importlib.util as u; print([m for m in ('tensorflow', 'keras') if u.find_spec(m)])"
    python = AGENT_BACKENDS[backend] / "python"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def photos(data):
    """12 train + 4 test photos per label from client 1, as an agent's store lays them out."""
    for split, count in (("train", 12), ("test", 4)):
        for label in ("head", "hardhat"):
            src = sorted((PHOTOS / "dataset_client1" / split / label).iterdir())[:count]
            (data / split / label).mkdir(parents=True)
            for f in src:
                shutil.copy(f, data / split / label / f.name)
    return data


def serve(backend, data, cache, artifacts, weights_file=None):
    """tests/agent_serve_train.py in the backend's venv: (the JSON summary, its stderr)."""
    proc = subprocess.run(
        [str(AGENT_BACKENDS[backend] / "python"), str(REPO / "tests" / "agent_serve_train.py"),
         str(REPO / "fedapp"), str(data), str(cache), str(artifacts / "backbone.tflite"),
         str(artifacts / "trainer.tflite"), *([str(weights_file)] if weights_file else [])],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@needs_shared
@pytest.mark.parametrize("backend", backend_params())
def test_train_message_served_without_tensorflow(tmp_path, agent_artifacts, backend):
    data = photos(tmp_path / "data")
    (data / "train" / "head" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (data / "train" / "hardhat" / "empty.jpg").write_bytes(b"")
    result, stderr = serve(backend, data, tmp_path / "cache", agent_artifacts)
    assert result["interpreter"].split()[0] == backend  # the backend this venv holds did the work
    assert result["tensorflow_loaded"] is False
    assert result["missing_before_ship"] == sorted([sha256_file(agent_artifacts / "backbone.tflite"),
                                                    sha256_file(agent_artifacts / "trainer.tflite")])
    assert result["missing_after_ship"] == ""
    assert result["shapes"] == [[1280, 128], [128], [128, 2], [2]]
    assert result["changed"] is True
    assert result["metrics"]["num-examples"] == 24
    assert result["metrics"]["test-examples"] == 8
    assert result["metrics"]["skipped-files"] == 2
    assert "broken.jpg" in result["skipped"] and "empty.jpg" in result["skipped"]
    # the warning names the file in the agent's own JSON log too
    assert '"event": "image_skipped"' in stderr and "broken.jpg" in stderr
    # the embeddings are cached: one file per usable image, keyed by backbone hash
    cached = list((tmp_path / "cache").glob("emb-*/*.npy"))
    assert len(cached) == 32
    # the agent's heartbeat reads this record (fed_common.node_config.LastTraining)
    last = result["last_training"]
    assert (last["campaign"], last["run_id"], last["round"], last["examples"]) == ("c-test", 7, 1, 24)
    assert 0 <= last["train_accuracy"] <= 1 and last["backbone_sha"]


@needs_shared
def test_both_backends_train_the_same_head(tmp_path, agent_artifacts):
    """Same photos, seed and start: the two backends' trained weights are within WEIGHTS_TOLERANCE."""
    missing = [b for b, bin_dir in AGENT_BACKENDS.items() if not (bin_dir / "python").exists()]
    if missing:
        pytest.skip(f"needs both agent venvs (make test); missing: {', '.join(missing)}")
    data = photos(tmp_path / "data")
    trained = {}
    for backend in AGENT_BACKENDS:
        result, _ = serve(backend, data, tmp_path / f"cache-{backend}", agent_artifacts,
                          tmp_path / f"{backend}.npz")
        with np.load(tmp_path / f"{backend}.npz") as arrays:
            trained[backend] = [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
        assert result["changed"] is True and result["metrics"]["num-examples"] == 24
    first, second = trained.values()
    differences = [float(np.max(np.abs(a - b))) for a, b in zip(first, second)]
    print(f"\nweights max abs difference tflite-runtime vs ai-edge-litert: {max(differences):.2e}")
    assert max(differences) <= WEIGHTS_TOLERANCE, differences
