"""The Pi answers as the coordinator does: `fed-agent predict` with the int8 champion agrees with
the registered Keras model on >= 95% of dataset_server/test.

Why this is worth a real campaign's model: int8 quantization (weights and activations,
calibrated on the server photos) is the one step between what the coordinator evaluates and
what a Pi runs. A toy graph would agree by luck; a trained head on real photos shows whether
the quantized model keeps the decisions. The agent side is the real console script from the
agent venv (no TensorFlow), reading the model its ModelStore installed from a signed
manifest, under each TFLite backend the agent can have (tflite-runtime and ai-edge-litert: both
must give the same labels).
"""

from __future__ import annotations

import json
import subprocess

import numpy as np

from agent_harness import token_file, write_config
from champion_harness import SERVER_TEST, build_champion, install_on_agent
from conftest import AGENT_BACKENDS, free_port, needs_agent_venv, needs_shared

pytestmark = [needs_shared, needs_agent_venv]

MIN_AGREEMENT = 0.95


def keras_labels(model_path, images: list[str], labels: list[str]) -> list[str]:
    """The registered model.keras on the product's one decoder (fedapp.images)."""
    import keras

    from fedapp.images import load_image

    model = keras.models.load_model(model_path)
    probs = model.predict(np.stack([load_image(path) for path in images]), verbose=0)
    return [labels[i] for i in probs.argmax(axis=1)]


def agent_labels(tmp_path, images: list[str], backend: str) -> tuple[int, list[str]]:
    """One `fed-agent predict --json` over every image, from the backend's venv: (model_version,
    labels in order)."""
    cfg = write_config(tmp_path / f"agent-{backend}.yaml", tmp_path / "state", f"127.0.0.1:{free_port()}",
                       "http://127.0.0.1:9/api/v1/heartbeat", token_file(tmp_path), free_port())
    proc = subprocess.run([str(AGENT_BACKENDS[backend] / "fed-agent"), "-c", str(cfg), "predict", *images, "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert [p["image"] for p in answer["predictions"]] == images  # every image, in order
    assert answer["interpreter"].split()[0] == backend
    return answer["model_version"], [p["label"] for p in answer["predictions"]]


def test_agent_int8_predictions_agree_with_the_coordinators_keras_model(tmp_path, agent_artifacts):
    registry, version = build_champion(tmp_path / "coordinator", agent_artifacts)
    labels = registry.metadata(version)["labels"]
    installed = install_on_agent(registry, version, tmp_path / "state", kind="int8")
    assert installed.file.name == "model_int8.tflite"
    truth = {str(p): p.parent.name for p in sorted(SERVER_TEST.glob("*/*.jpg"))}
    images = list(truth)

    on_coordinator = keras_labels(registry.path(version) / "model.keras", images, labels)
    n = len(images)
    keras_acc = sum(k == truth[i] for i, k in zip(images, on_coordinator)) / n
    assert n == 27
    # A model that learned nothing could agree with itself by answering one label everywhere.
    assert keras_acc >= 0.9, f"the champion did not learn (Keras accuracy {keras_acc:.3f})"
    by_backend = {}
    for backend, bin_dir in AGENT_BACKENDS.items():
        if not (bin_dir / "fed-agent").exists():  # the default one is required (pytestmark)
            print(f"\n{backend}: skipped, {bin_dir.parent.name} not made")
            continue
        running, on_agent = agent_labels(tmp_path, images, backend)
        agreement = sum(a == k for a, k in zip(on_agent, on_coordinator)) / n
        agent_acc = sum(a == truth[i] for i, a in zip(images, on_agent)) / n
        print(f"\nagent int8 ({backend}) vs coordinator Keras on dataset_server/test: agreement "
              f"{agreement:.3f} (n={n}); accuracy Keras {keras_acc:.3f}, agent int8 {agent_acc:.3f}")
        assert running == version
        assert agreement >= MIN_AGREEMENT, (backend, list(zip(images, on_coordinator, on_agent)))
        by_backend[backend] = on_agent
    # Same int8 file, same photos: the two interpreters must not disagree on a single label.
    assert len(set(map(tuple, by_backend.values()))) == 1, by_backend
