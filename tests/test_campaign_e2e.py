"""A real campaign: real SuperLink, 2 real SuperNodes (agent venv, no TensorFlow), real photos.

It uses pseudo labels (campaign.use_pseudo_labels, weight 0.5): pi-2's store also holds two
pseudo-labeled photos in unlabeled/ (indexed as the agent's pseudo-labeler leaves them), so
the label counts travel through Flower and end in the round events and the model's metadata.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import PHOTOS, WEIGHTS, needs_agent_venv, needs_shared
from fed_coordinator.config import CampaignSection
from fed_demo.local_fleet import run_local_campaign
from fed_coordinator.models.registry import ModelRegistry

LABELS = ["head", "hardhat"]


def pseudo_labeled(store: Path, photos: Path) -> None:
    """`photos`' images as pseudo labels in the agent's store (the rest found by their place)."""
    from fed_common.files import sha256_bytes
    from fed_common.store import ImageStore, IndexEntry, StoredPrediction

    entries = {}
    for photo in sorted(photos.glob("*/*")):
        content = photo.read_bytes()
        sha = sha256_bytes(content)
        target = store / "unlabeled" / f"{sha[:16]}{photo.suffix}"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(content)
        guess = StoredPrediction(label=photo.parent.name, confidence=0.95, model_version=1, time="2025-01-01T00:00:00Z")
        entries[sha] = IndexEntry(sha256=sha, label=None, split="unlabeled", size=len(content),
                                  path=f"unlabeled/{target.name}", status="pseudo", prediction=guess)
    ImageStore(store).write_index(entries)


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    root = tmp_path_factory.mktemp("campaign")
    data = root / "data"
    shutil.copytree(PHOTOS, data)
    data.chmod(0o755)
    for p in data.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    bad = data / "dataset_client1" / "train"
    good = next((bad / "head").iterdir()).read_bytes()
    (bad / "head" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (bad / "hardhat" / "zero.jpg").write_bytes(b"")
    (bad / "hardhat" / "readme.jpg").write_text("not a photo")
    pseudo_labeled(data / "dataset_client2", data / "dataset_server" / "train")
    events = []
    settings = CampaignSection(server_data_dir=data / "dataset_server", weights=str(WEIGHTS),
                                labels=LABELS, rounds=3, local_epochs=20, batch_size=8,
                                use_pseudo_labels=True, pseudo_label_weight=0.5)
    outcome = run_local_campaign(data, root / "state", settings, on_event=events.append)
    return outcome, events, root


pytestmark = [needs_shared, needs_agent_venv]


def test_campaign_completes_with_accurate_server_model(campaign):
    outcome, events, _ = campaign
    assert outcome.status == "completed", outcome.reason
    rounds = [e for e in events if e["event"] == "round"]
    assert [e["round"] for e in rounds] == [0, 1, 2, 3]
    assert rounds[-1]["server_accuracy"] >= 0.90
    assert all(sorted(p["agent"] for p in e["participants"]) == ["pi-1", "pi-2"] for e in rounds[1:])
    # per agent, the labels each round used: pi-2's two pseudo labels count half each in FedAvg
    used = {(p["agent"], p["human-examples"], p["pseudo-examples"], p["num-examples"])
            for e in rounds[1:] for p in e["participants"]}
    assert used == {("pi-1", 208, 0, 208), ("pi-2", 207, 2, 208)}
    assert all(p["test-examples"] == {"pi-1": 45, "pi-2": 46}[p["agent"]] for e in rounds[1:] for p in e["participants"])


def test_bad_files_are_skipped_by_name_and_campaign_goes_on(campaign):
    outcome, _, root = campaign
    names = sorted(path.rsplit("/", 1)[-1] for path, _ in outcome.skipped_files["pi-1"])
    assert names == ["readme.jpg", "truncated.jpg", "zero.jpg"]
    assert outcome.skipped_files["pi-2"] == []
    meta = ModelRegistry(root / "state" / "models").metadata(outcome.model_version)
    assert meta["example_counts"] == {"pi-1": 208, "pi-2": 208}  # bad files not counted; + 2 pseudo x 0.5
    assert meta["label_counts"] == {"pi-1": {"human": 208, "pseudo": 0}, "pi-2": {"human": 207, "pseudo": 2}}
    assert sorted(meta["skipped_files"]) == ["pi-1", "pi-2"]


def test_only_head_weights_travel(campaign):
    outcome, _, root = campaign
    meta = ModelRegistry(root / "state" / "models").metadata(outcome.model_version)
    per_round = meta["bytes_exchanged"]["per_round_per_agent"]
    assert len(per_round) == 3
    for r in per_round:
        assert 600_000 < r["down"] <= 700_000 and 600_000 < r["up"] <= 700_000
    # the 9.5 MB backbone went once per agent for the whole campaign, not per round
    exports = next((root / "state" / "exports").iterdir())
    size = sum(f.stat().st_size for f in exports.glob("*.tflite"))
    assert sorted(meta["bytes_exchanged"]["artifacts_shipped"].values()) == [size, size]


def test_registered_models_agree_with_keras(campaign):
    outcome, _, root = campaign
    import keras

    from fedapp.images import scan_folder
    from fedapp.tflite import load_interpreter

    folder = root / "state" / "models" / f"v{outcome.model_version:04d}"
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["labels"] == LABELS and meta["campaign_id"] == outcome.campaign_id
    assert set(meta["files"]) == {"model.keras", "model_float32.tflite", "model_int8.tflite"}
    # calibrated at registration on the server folder's calibration part (9 of its 27 photos)
    assert meta["calibration"]["method"] == "temperature" and meta["calibration"]["split"]["gate_images"] == 18
    assert all(meta["calibration"][kind]["temperature"] for kind in ("float32", "int8"))
    assert not list(folder.parent.glob(".incoming-*"))
    scan = scan_folder(PHOTOS / "dataset_server" / "test", LABELS)
    from fedapp.images import decode_image

    x = np.stack([decode_image(f.data) for f in scan.files])
    y = np.array([f.label for f in scan.files])
    keras_pred = keras.models.load_model(folder / "model.keras").predict(x, verbose=0).argmax(1)
    assert (keras_pred == y).mean() >= 0.90
    for name in ("model_float32.tflite", "model_int8.tflite"):
        interp = load_interpreter(folder / name)
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        preds = []
        for img in x:
            interp.set_tensor(inp["index"], img[None])
            interp.invoke()
            probs = interp.get_tensor(out["index"])[0]
            assert abs(probs.sum() - 1) < 0.02  # probabilities out
            preds.append(probs.argmax())
        agreement = (np.array(preds) == keras_pred).mean()
        assert agreement >= 0.95, f"{name} agrees with Keras on {agreement:.2%}"
