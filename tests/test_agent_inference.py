"""On-device inference, in-process: the running classifier, the self-test on the Pi's own
photos, predictions.jsonl, the field summary's counts and the inference worker. Real TFLite
models (field_models) and the real interpreter throughout; the label hooks are in
test_agent_label_hooks.py."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fed_agent.classifier import RunningClassifier
from fed_agent.field import FieldTally
from fed_agent.hooks import LabelHooks
from fed_agent.inference import FieldInference, FiledImage
from fed_agent.model_store import ModelStore, models_root
from fed_agent.model_updater import ModelUpdater
from fed_agent.predictions import PredictionLog
from fed_agent.threads import drained
from fed_common.manifest import ManifestRejected
import field_models
from field_models import Events, blues, colour_model, file_photos, photo, prediction, reds, signed_model

KEY = Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {"good": colour_model(True), "bad": colour_model(False)}


def install(store: ModelStore, data: bytes, version: int):
    return store.install(signed_model(KEY, data, version), data)


def self_testing_store(state: Path, margin: float = 0.05) -> ModelStore:
    return field_models.self_testing_store(state, KEY, margin)


def test_the_running_classifier_follows_current_and_each_answer_is_one_versions(tmp_path, models):
    store = ModelStore(tmp_path / "models", KEY.public_key())
    running = RunningClassifier(store.root)
    red = tmp_path / "red.png"
    red.write_bytes(photo((200, 30, 30)))
    assert running.classify_file(red) is None and running.manifest() is None  # no model yet
    install(store, models["good"], 1)
    first = running.classify_file(red)
    assert (first.label, first.model_version) == ("head", 1) and first.confidence > 0.99
    assert set(first.scores) == {"head", "hardhat"} and first.scores["head"] == first.confidence
    install(store, models["bad"], 2)  # no photos in the store: the smoke inference alone decides
    assert (running.classify_file(red).label, running.manifest().version) == ("hardhat", 2)

    answers, errors = [], []

    def classify_many() -> None:
        for _ in range(25):
            try:
                answers.append(running.classify_file(red))
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    threads = [threading.Thread(target=classify_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    switches = 0
    while any(thread.is_alive() for thread in threads):  # switch back and forth under them
        store.switch_to(1 if switches % 2 == 0 else 2)
        switches += 1
    assert not errors and len(answers) == 100 and switches > 1
    # the labels always come with the file they belong to: v1 says head, v2 hardhat
    assert {(a.model_version, a.label) for a in answers} <= {(1, "head"), (2, "hardhat")}


def test_self_test_refuses_a_model_worse_on_the_pis_own_photos_and_accepts_an_equal_one(tmp_path, models):
    state = tmp_path / "state"
    n = file_photos(state, reds(6), blues(6))
    assert n >= 8
    store = self_testing_store(state)
    install(store, models["good"], 1)  # the first model: nothing to compare with
    first = store.self_tested()
    assert (first.version, first.accuracy, first.images, first.running_version) == (1, 1.0, n, None)
    install(store, models["good"], 2)  # as good as the running one: accepted
    second = store.self_tested()
    assert store.running().version == 2 and (second.accuracy, second.running_version, second.running_accuracy) == (
        1.0, 1, 1.0)
    with pytest.raises(ManifestRejected) as refused:
        install(store, models["bad"], 3)
    assert str(refused.value) == (f"self-test: v3 scores 0.00 on {n} test images, v2 scores 1.00; "
                                  "more than 0.05 below")
    assert store.running().version == 2 and not store.folder(3).exists()
    # the margin is what decides: allowed 1.0 below, the same model goes in, its score kept
    install(self_testing_store(state, margin=1.0), models["bad"], 3)
    assert (store.running().version, store.self_tested().accuracy, store.self_tested().running_accuracy) == (
        3, 0.0, 1.0)


def test_the_running_models_self_test_is_in_the_heartbeat_after_a_restart_and_a_rollback(tmp_path, models):
    state = tmp_path / "state"
    n = file_photos(state, reds(3), blues(3))
    install(self_testing_store(state), models["good"], 1)
    install(self_testing_store(state, margin=1.0), models["bad"], 2)

    def restarted_status():  # a new process: a new store and updater on the same folder
        store = ModelStore(models_root(state), KEY.public_key())
        return ModelUpdater(store, "http://127.0.0.1:9", lambda: "t", log=Events()).status(), store

    status, store = restarted_status()
    assert (status.version, status.self_test_accuracy, status.self_test_images) == (2, 0.0, n)
    store.switch_to(1)  # a rollback to the version kept on disk reports that version's own test
    status, _ = restarted_status()
    assert (status.version, status.self_test_accuracy, status.self_test_images) == (1, 1.0, n)


def test_without_labeled_test_photos_the_self_test_is_the_smoke_inference(tmp_path, models):
    state = tmp_path / "state"
    store = self_testing_store(state)
    install(store, models["good"], 1)
    status = ModelUpdater(store, "http://127.0.0.1:9", lambda: "t", log=Events()).status()
    assert (status.version, status.state, status.self_test_accuracy, status.self_test_images) == (1, "ok", None, 0)
    with pytest.raises(ManifestRejected, match="answers 2 values .* for 3 labels"):  # the smoke check still runs
        store.install(signed_model(KEY, models["good"], 2, labels=["head", "hardhat", "cap"]), models["good"])


def test_predictions_log_rotates_keeping_n_files_of_whole_lines(tmp_path):
    log = PredictionLog(tmp_path / "predictions.jsonl", max_bytes=300, keep=2, log=Events())
    for i in range(40):
        assert log.append({"i": i, "label": "head", "confidence": 0.9})
    files = log.files()
    assert [p.name for p in files] == ["predictions.jsonl", "predictions.jsonl.1", "predictions.jsonl.2"]
    assert not (tmp_path / "predictions.jsonl.3").exists()
    kept = [json.loads(line)["i"] for p in reversed(files) for line in p.read_text().splitlines()]
    assert all(p.stat().st_size <= 300 for p in files)
    assert kept == list(range(40 - len(kept), 40)) and len(kept) > 10  # the newest, in order, none torn


def test_a_failing_predictions_write_is_logged_once_and_never_raised(tmp_path):
    events = Events()
    log = PredictionLog(tmp_path / "gone" / "predictions.jsonl", max_bytes=4096, keep=1, log=events)
    assert log.append({"i": 1}) is False and log.append({"i": 2}) is False
    assert len(events.named("predictions_write_failed")) == 1 and log.failures == 2
    (tmp_path / "gone").mkdir()
    assert log.append({"i": 3}) and events.named("predictions_write_recovered")


def test_field_summary_counts_and_resets_only_what_an_accepted_heartbeat_carried():
    tally = FieldTally(low_confidence=0.6)
    assert tally.summary(running_version=None) is None  # nothing seen, no model
    assert tally.summary(running_version=4).model_dump(include={"model_version", "images"}) == {
        "model_version": 4, "images": 0}
    for label, confidence, human in [("head", 0.9, "head"), ("head", 0.5, "hardhat"), ("hardhat", 0.7, "hardhat"),
                                     ("hardhat", 0.55, None)]:
        tally.add(prediction(label, confidence), human)
    first = tally.summary(running_version=1)
    assert (first.images, first.predicted, first.low_confidence_images, first.labeled, first.correct) == (
        4, {"head": 2, "hardhat": 2}, 2, 3, 2)
    assert first.mean_confidence == pytest.approx((0.9 + 0.5 + 0.7 + 0.55) / 4, abs=1e-4)
    assert first.low_confidence_share == 0.5 and first.field_accuracy == pytest.approx(2 / 3)
    # the post failed (no accepted): the next heartbeat carries it all again
    again = tally.summary(running_version=1)
    assert again.images == 4
    tally.add(prediction("head", 0.95), "head")  # while `again` is in flight
    tally.accepted(first)  # a stale summary: not the one last handed out, nothing taken off
    tally.accepted(again)
    rest = tally.summary(running_version=1)
    assert (rest.images, rest.predicted, rest.correct, rest.mean_confidence) == (1, {"head": 1}, 1, 0.95)
    tally.accepted(rest)
    assert tally.summary(running_version=1).images == 0
    assert tally.totals().images == 5  # since start, for the STATUS line


def test_field_summary_sends_one_model_version_at_a_time_oldest_first():
    tally = FieldTally(low_confidence=0.6)
    tally.add(prediction("head", 0.9, version=1), "head")
    tally.add(prediction("hardhat", 0.8, version=2), "head")
    tally.add(prediction("head", 0.7, version=2), "head")
    old = tally.summary(running_version=2)
    assert (old.model_version, old.images) == (1, 1)
    tally.accepted(old)
    new = tally.summary(running_version=2)
    assert (new.model_version, new.images, new.correct) == (2, 2, 1)


def test_inference_worker_files_predictions_counts_them_and_survives_bad_images(tmp_path, models):
    store = ModelStore(tmp_path / "models", KEY.public_key())
    events = Events()
    predictions = PredictionLog(tmp_path / "predictions.jsonl", 1_000_000, 2, events)
    tally = FieldTally(low_confidence=0.6)
    worker = FieldInference(RunningClassifier(store.root), predictions, tally, LabelHooks({}, events), events)
    images = {}
    for name, colour in [("red", (200, 30, 30)), ("blue", (20, 30, 200)), ("grey", (128, 128, 128))]:
        images[name] = tmp_path / f"{name}.png"
        images[name].write_bytes(photo(colour))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    worker.start()
    try:
        worker.submit(FiledImage(images["red"], "a" * 64, "head"))  # no model runs yet: not classified
        assert drained(worker.queue, 30) and worker.classified == 0 and worker.errors == 0
        install(store, models["good"], 1)
        for name, human in [("red", "head"), ("blue", "head"), ("grey", "hardhat")]:
            worker.submit(FiledImage(images[name], name[0] * 64, human))
        worker.submit(FiledImage(tmp_path / "broken.png", "b" * 64, "head"))
        worker.submit(FiledImage(tmp_path / "missing.png", "c" * 64, "head"))
        worker.submit(FiledImage(images["red"], "r" * 64, None))  # came in unlabeled
        assert drained(worker.queue, 60)
        assert worker.healthy()  # the errors did not end it
    finally:
        worker.stop()
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [(r["label"], r["human_label"], r["model_version"]) for r in rows] == [
        ("head", "head", 1), ("hardhat", "head", 1), ("head", "hardhat", 1), ("head", None, 1)]
    assert set(rows[0]) == {"time", "sha256", "path", "label", "confidence", "scores", "model_version", "human_label"}
    assert (rows[0]["path"], rows[0]["sha256"], rows[1]["sha256"]) == (str(images["red"]), "r" * 64, "b" * 64)
    assert rows[2]["confidence"] == 0.5  # grey: the least sure answer there is
    assert worker.errors == 2 and len(events.named("prediction_failed")) == 2
    summary = tally.summary(running_version=1)
    assert (summary.images, summary.predicted, summary.labeled, summary.correct, summary.low_confidence_images) == (
        4, {"head": 3, "hardhat": 1}, 3, 1, 1)
    assert summary.mean_confidence == pytest.approx(sum(r["confidence"] for r in rows) / 4, abs=1e-4)
    logged = events.named("image_predicted")
    assert [(e["model_version"], e["label"]) for e in logged] == [(1, "head"), (1, "hardhat"), (1, "head"), (1, "head")]
    assert os.path.exists(images["red"])  # classifying never moves or removes a photo
