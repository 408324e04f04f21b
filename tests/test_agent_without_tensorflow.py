"""The agent side serves a training message in a process where TensorFlow cannot be imported."""

import json
import shutil
import subprocess

from conftest import AGENT_PYTHON, PHOTOS, REPO, needs_agent_venv, needs_shared


@needs_agent_venv
def test_agent_venv_has_no_tensorflow():
    code = "import importlib.util as u; print([m for m in ('tensorflow', 'keras') if u.find_spec(m)])"
    out = subprocess.run([str(AGENT_PYTHON), "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@needs_agent_venv
@needs_shared
def test_train_message_served_without_tensorflow(tmp_path, agent_artifacts):
    data = tmp_path / "data"
    for split, count in (("train", 12), ("test", 4)):
        for label in ("head", "hardhat"):
            src = sorted((PHOTOS / "dataset_client1" / split / label).iterdir())[:count]
            (data / split / label).mkdir(parents=True)
            for f in src:
                shutil.copy(f, data / split / label / f.name)
    (data / "train" / "head" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (data / "train" / "hardhat" / "empty.jpg").write_bytes(b"")
    proc = subprocess.run(
        [str(AGENT_PYTHON), str(REPO / "tests" / "agent_serve_train.py"), str(REPO / "fedapp"),
         str(data), str(tmp_path / "cache"), str(agent_artifacts / "backbone.tflite"),
         str(agent_artifacts / "trainer.tflite")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["tensorflow_loaded"] is False
    assert result["missing_after_ship"] == ""
    assert result["shapes"] == [[1280, 128], [128], [128, 2], [2]]
    assert result["changed"] is True
    assert result["metrics"]["num-examples"] == 24
    assert result["metrics"]["test-examples"] == 8
    assert result["metrics"]["skipped-files"] == 2
    assert "broken.jpg" in result["skipped"] and "empty.jpg" in result["skipped"]
    # the warning names the file in the agent's own JSON log too
    assert '"event": "image_skipped"' in proc.stderr and "broken.jpg" in proc.stderr
    # the embeddings are cached: one file per usable image, keyed by backbone hash
    cached = list((tmp_path / "cache").glob("emb-*/*.npy"))
    assert len(cached) == 32
    # the agent's heartbeat reads this record (fed_common.node_config.LastTraining)
    last = result["last_training"]
    assert (last["campaign"], last["run_id"], last["round"], last["examples"]) == ("c-test", 7, 1, 24)
    assert 0 <= last["train_accuracy"] <= 1 and last["backbone_sha"]
