"""Unlabeled images on the agent, in-process: inbox/unlabeled/ into data/unlabeled/ through
the inbox's own checks, pseudo labels or the review queue by the running model's confidence,
the per-class cap (a 90/10 stream), a human label always winning, withdrawal after a
rollback, and what the ClientApp and the heartbeat see. Real TFLite models (field_models)
where the model's answer matters; `fed-agent label` is in test_agent_label_command.py."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fed_agent.classifier import RunningClassifier
from fed_agent.field import FieldTally
from fed_agent.hooks import LabelHooks
from fed_agent.inbox import Inbox
from fed_agent.inference import FieldInference, FiledImage
from fed_agent.model_store import ModelStore, models_root
from fed_agent.predictions import PredictionLog
from fed_agent.pseudo_labels import LabelingPolicy, PseudoLabeler
from fed_agent.store_writer import StoreWriter
from fed_agent.threads import drained
from fed_common.heartbeat import ImageCounts
from fed_common.node_config import NodeConfig
from fed_common.store import ImageStore, IndexEntry, StoreLayout
from fedapp.node_data import load_node_data
from field_models import Events, blues, colour_model, photo, prediction, signed_model
from test_agent_inbox import NOW, all_files, bad_inputs, drop, jpeg

LABELS = ["head", "hardhat"]
KEY = Ed25519PrivateKey.generate()


def make_inbox(state: Path, **kw) -> Inbox:
    return Inbox(state, LABELS, clock=lambda: NOW, min_width=32, min_height=32, **kw)


def labeler_for(inbox: Inbox, events=None, **policy) -> PseudoLabeler:
    return PseudoLabeler(inbox.writer, LabelingPolicy(**policy), events if events is not None else Events())


def file_images(state: Path, inbox: Inbox, folder: str, images: list[bytes], prefix: str = "img") -> list[IndexEntry]:
    """Drop the images into inbox/<folder>/ and let the inbox file them (all accepted)."""
    for i, data in enumerate(images):
        drop(state, f"{folder}/{prefix}-{i:03d}.png", data)
    report = inbox.ingest()
    assert len(report.filed) == len(images), report.quarantined
    return report.filed


def statuses(state: Path) -> dict[str, IndexEntry]:
    """sha256 -> entry, as the index on disk says."""
    saved = ImageStore(StoreLayout(state).data_dir).read_index()
    return {entry.sha256: entry for entry in saved.images}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_unlabeled_images_are_stored_apart_and_split_by_confidence_and_the_client_app_never_sees_them(tmp_path):
    state = tmp_path / "state"
    inbox = make_inbox(state)
    humans = file_images(state, inbox, "head", [jpeg(i) for i in range(5)], "h")
    unlabeled = file_images(state, inbox, "unlabeled", [jpeg(10 + i) for i in range(4)])
    assert {e.path.split("/")[0] for e in unlabeled} == {"unlabeled"}  # data/unlabeled/, never a split
    assert all((e.status, e.label, e.split, e.prediction) == ("unlabeled", None, "unlabeled", None)
               for e in unlabeled)
    assert all((state / "data" / e.path).is_file() for e in unlabeled)
    labeler = labeler_for(inbox, pseudo_threshold=0.9, max_pseudo_ratio=1.0)
    sure, at_threshold, unsure, other = unlabeled
    assert labeler.decide(sure.sha256, prediction("head", 0.97, version=3)).status == "pseudo"
    assert labeler.decide(at_threshold.sha256, prediction("head", 0.9, version=3)).status == "pseudo"
    review = labeler.decide(unsure.sha256, prediction("head", 0.8912, version=3))
    assert review.status == "review" and review.reason == "confidence 0.8912 below pseudo_threshold 0.9"
    inbox.flush()
    on_disk = statuses(state)
    pseudo = on_disk[sure.sha256]
    assert (pseudo.status, pseudo.label, pseudo.pseudo_label, pseudo.path) == ("pseudo", None, "head", sure.path)
    assert (pseudo.prediction.label, pseudo.prediction.confidence, pseudo.prediction.model_version) == ("head", 0.97, 3)
    assert pseudo.prediction.time.startswith("20")  # provenance: when, by which model, how sure
    assert (on_disk[unsure.sha256].prediction.label, on_disk[unsure.sha256].prediction.confidence) == ("head", 0.8912)
    assert on_disk[other.sha256].status == "unlabeled"  # not classified yet
    assert inbox.counts() | {"labels": None} == {"labels": None, "quarantined": 0, "pending": 0,
                                                  "pseudo": 2, "review": 1, "unlabeled": 1}
    # what the ClientApp trains and tests on today: the human labels, nothing else, nothing skipped
    layout = StoreLayout(state)
    train, test, skipped = load_node_data(NodeConfig(data_dir=layout.data_dir, cache_dir=layout.cache_dir,
                                                     agent_name="pi-1"), LABELS)
    assert sorted(f.digest for f in train + test) == sorted(e.sha256 for e in humans) and skipped == []
    store = ImageStore(layout.data_dir)
    assert {e.sha256 for split in ("train", "test") for e in store.entries(split, LABELS)} == {
        e.sha256 for e in humans}


def test_labeling_disabled_sends_every_classified_image_to_review(tmp_path):
    state = tmp_path / "state"
    inbox = make_inbox(state)
    file_images(state, inbox, "head", [jpeg(i) for i in range(3)], "h")
    (entry,) = file_images(state, inbox, "unlabeled", [jpeg(9)])
    decided = labeler_for(inbox, enabled=False).decide(entry.sha256, prediction("head", 0.999))
    assert (decided.status, decided.reason) == ("review", "pseudo-labeling is off (labeling.enabled: false)")


def skewed_stream(n: int = 100) -> list[tuple[str, bytes]]:
    """A camera that sees heads 90% of the time: (true label, frame), every tenth one a hardhat."""
    frames = []
    for i in range(n):
        if i % 10 == 9:
            frames.append(("hardhat", photo((25, 35 + i // 10, 200 + i // 10))))  # not blues(): new frames
        else:
            frames.append(("head", photo((140 + i, 10 + i % 7, 30))))
    return frames


def classify_all(state: Path, inbox: Inbox, labeler: PseudoLabeler, entries: list[IndexEntry]) -> FieldTally:
    """The daemon's inference worker, with the real model, over these filed images."""
    events, tally = Events(), FieldTally(0.6)
    worker = FieldInference(RunningClassifier(models_root(state)), PredictionLog(state / "p.jsonl", 10**7, 2, events),
                            tally, LabelHooks({}, events), events, labeler=labeler)
    worker.start()
    try:
        for entry in entries:
            worker.submit(FiledImage(inbox.store.path_of(entry), entry.sha256, entry.label))
        assert drained(worker.queue, 120)
    finally:
        worker.stop()
    assert worker.errors == 0
    return tally


def test_the_class_cap_keeps_a_90_10_stream_from_flooding_the_training_set_with_one_class(tmp_path):
    state = tmp_path / "state"
    inbox = make_inbox(state)
    model = colour_model(True)
    ModelStore(models_root(state), KEY.public_key()).install(signed_model(KEY, model, 1), model)
    file_images(state, inbox, "head", [photo((200, 40 + i, 30)) for i in range(10)], "h")
    file_images(state, inbox, "hardhat", blues(10), "b")
    stream = skewed_stream()
    filed = file_images(state, inbox, "unlabeled", [frame for _, frame in stream])
    truth = {sha(frame): label for label, frame in stream}
    tally = classify_all(state, inbox, labeler_for(inbox, pseudo_threshold=0.9, max_pseudo_ratio=1.0), filed)
    inbox.flush()
    entries = [e for e in statuses(state).values() if e.status != "human"]
    pseudo = [e for e in entries if e.status == "pseudo"]
    capped = [e for e in entries if e.status == "review"]
    # every frame was sure (> 0.99): without the cap 90 heads would be pseudo labels for 10 human ones
    assert all(e.prediction.confidence > 0.99 and e.prediction.label == truth[e.sha256] for e in entries)
    assert sorted(e.pseudo_label for e in pseudo) == ["hardhat"] * 10 + ["head"] * 10
    assert len(capped) == 80 and {e.prediction.label for e in capped} == {"head"}
    assert {e.reason for e in capped} == {"class cap: 'head' has 10 pseudo labels for 10 human labels "
                                          "(max_pseudo_ratio 1)"}
    assert inbox.counts()["pseudo"] == 20 and inbox.counts()["review"] == 80
    summary = tally.summary(running_version=1)  # unlabeled frames are field images without a human label
    assert (summary.images, summary.labeled, summary.predicted) == (100, 0, {"head": 90, "hardhat": 10})


def test_a_human_label_wins_over_a_pseudo_label_and_a_review_item(tmp_path):
    state = tmp_path / "state"
    inbox = make_inbox(state, test_fraction=0.5)
    file_images(state, inbox, "head", [jpeg(i) for i in range(3)], "h")
    frames = [jpeg(20), jpeg(21)]
    pseudo_one, review_one = file_images(state, inbox, "unlabeled", frames)
    labeler = labeler_for(inbox)
    labeler.decide(pseudo_one.sha256, prediction("head", 0.99))
    labeler.decide(review_one.sha256, prediction("head", 0.55))
    copies = [drop(state, "hardhat/same-as-pseudo.jpg", frames[0]), drop(state, "head/same-as-review.jpg", frames[1])]
    report = inbox.ingest()
    assert not report.accepted and len(report.labeled) == 2 and len(report.quarantined) == 2
    on_disk = statuses(state)
    for entry, label in ((pseudo_one, "hardhat"), (review_one, "head")):
        now = on_disk[entry.sha256]
        assert (now.status, now.label, now.prediction, now.reason) == ("human", label, None, None)
        assert now.path.startswith(f"{now.split}/{label}/") and (state / "data" / now.path).read_bytes() == \
            frames[[pseudo_one, review_one].index(entry)]
        assert not (state / "data" / entry.path).exists()
    reasons = {Path(src).name: why for src, why in report.quarantined}
    assert reasons["same-as-pseudo.jpg"].startswith(f"duplicate of data/{on_disk[pseudo_one.sha256].path} "
                                                    "(stored as pseudo")
    assert not any(p.exists() for p in copies) and (state / "quarantine" / "hardhat" / "same-as-pseudo.jpg").is_file()
    # a model's answer that arrives after the person's label changes nothing
    assert labeler.decide(pseudo_one.sha256, prediction("head", 0.99)) is None
    assert statuses(state)[pseudo_one.sha256].label == "hardhat"
    assert inbox.counts()["pseudo"] == inbox.counts()["review"] == 0
    assert inbox.counts()["labels"]["hardhat"]["train"] + inbox.counts()["labels"]["hardhat"]["test"] == 1


def test_an_unlabeled_copy_of_a_stored_image_is_a_duplicate_and_changes_nothing(tmp_path):
    state = tmp_path / "state"
    inbox = make_inbox(state)
    (labeled,) = file_images(state, inbox, "head", [jpeg(1)], "h")
    (unlabeled,) = file_images(state, inbox, "unlabeled", [jpeg(2)])
    drop(state, "unlabeled/again-labeled.jpg", jpeg(1))
    drop(state, "unlabeled/again-unlabeled.jpg", jpeg(2))
    report = inbox.ingest()
    assert not report.accepted and not report.labeled
    assert dict((Path(s).name, r) for s, r in report.quarantined) == {
        "again-labeled.jpg": f"duplicate of data/{labeled.path}",
        "again-unlabeled.jpg": f"duplicate of data/{unlabeled.path}"}
    assert statuses(state)[labeled.sha256] == labeled and statuses(state)[unlabeled.sha256] == unlabeled
    assert sorted(p.name for p in (state / "quarantine" / "unlabeled").iterdir()) == [
        "again-labeled.jpg", "again-labeled.jpg.reason.json", "again-unlabeled.jpg", "again-unlabeled.jpg.reason.json"]


def test_nothing_dropped_unlabeled_is_lost(tmp_path):
    """Every file dropped into inbox/unlabeled/ ends in data/unlabeled/ or in quarantine with
    its reason: the inbox's own checks, for frames as for labeled photos."""
    state = tmp_path / "state"
    inbox = make_inbox(state, max_bytes=6000)
    dropped = {}
    for rel, data, _, reason in bad_inputs():
        if rel.count("/") == 1 and not reason.startswith("unknown label"):  # empty, unreadable, too large...
            dropped[drop(state, "unlabeled/" + rel.split("/")[1], data)] = reason.replace("min 64x64", "min 32x32")
    for i in range(3):
        dropped[drop(state, f"unlabeled/cam/frame-{i}.jpg", jpeg(40 + i))] = None  # a sub-folder is fine
    dropped[drop(state, "unlabeled/cam/frame-again.jpg", jpeg(40))] = "duplicate of data/unlabeled/"
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(jpeg(50))
    os.link(outside, state / "inbox" / "unlabeled" / "linked.jpg")
    os.utime(state / "inbox" / "unlabeled" / "linked.jpg", (NOW - 3600, NOW - 3600))
    dropped[state / "inbox" / "unlabeled" / "linked.jpg"] = "hard link"
    contents = sorted([p.read_bytes() for p in dropped] + [outside.read_bytes()])
    report = inbox.ingest()
    assert len(report.accepted) == 3 and {e.status for e in report.filed} == {"unlabeled"}
    assert sorted(all_files(tmp_path).values()) == contents  # every byte is somewhere, once
    assert not any(p.exists() for p in dropped)
    notes = {Path(n["source"]).name: n["reason"] for n in
             (json.loads(p.read_text()) for p in (state / "quarantine" / "unlabeled").rglob("*.reason.json"))}
    expected = {p.name: r for p, r in dropped.items() if r is not None}
    assert set(notes) == set(expected) and all(notes[name].startswith(expected[name]) for name in expected)
    assert len(list((state / "data" / "unlabeled").iterdir())) == 3


def test_pseudo_labels_of_a_rolled_back_model_are_withdrawn_and_classified_again(tmp_path):
    state = tmp_path / "state"
    inbox = make_inbox(state)
    file_images(state, inbox, "head", [jpeg(i) for i in range(5)], "h")
    by_v1, by_v2, review_v2, waiting = file_images(state, inbox, "unlabeled", [jpeg(30 + i) for i in range(4)])
    events = Events()
    labeler = labeler_for(inbox, events)
    assert [e.sha256 for e in labeler.follow(1)] == sorted(  # at start: everything not classified yet
        [e.sha256 for e in (by_v1, by_v2, review_v2, waiting)], key=lambda s: statuses(state)[s].path)
    labeler.decide(by_v1.sha256, prediction("head", 0.95, version=1))
    assert labeler.follow(1) == []  # nothing changed
    labeler.decide(by_v2.sha256, prediction("head", 0.97, version=2))
    labeler.decide(review_v2.sha256, prediction("head", 0.6, version=2))
    assert labeler.follow(2) == [statuses(state)[waiting.sha256]]  # an update: what waits is classified by v2
    again = labeler.follow(1)  # v2 rolled back: v1 runs again
    inbox.flush()
    now = statuses(state)
    assert (now[by_v2.sha256].status, now[by_v2.sha256].prediction) == ("unlabeled", None)
    assert now[by_v2.sha256].reason.endswith("pseudo label 'head' of v2 (0.97); the model was rolled back to v1")
    assert now[by_v1.sha256].status == "pseudo" and now[by_v1.sha256].prediction.model_version == 1
    assert now[review_v2.sha256].status == "review"  # a review item is a person's to decide
    assert {e.sha256 for e in again} == {by_v2.sha256, waiting.sha256}
    assert events.named("pseudo_labels_withdrawn")[0] | {"event": None} == {
        "event": None, "level": "warning", "count": 1, "running_version": 1, "made_by": [2]}
    assert labeler.decide(by_v2.sha256, prediction("head", 0.93, version=1)).prediction.model_version == 1
    assert labeler.follow(2) == [inbox.writer.entries()[waiting.sha256]]  # v2 back: v1's labels stay
    inbox.flush()
    assert statuses(state)[by_v2.sha256].status == "pseudo"


def test_an_unsaved_decision_and_another_process_label_both_survive(tmp_path):
    """The daemon's pseudo labels wait for its next flush; `fed-agent label` (another writer,
    here a second StoreWriter) writes meanwhile: neither change is lost."""
    from fed_agent.human_labels import apply_human_label

    state = tmp_path / "state"
    inbox = make_inbox(state)
    file_images(state, inbox, "head", [jpeg(i) for i in range(3)], "h")
    first, second = file_images(state, inbox, "unlabeled", [jpeg(60), jpeg(61)])
    labeler_for(inbox).decide(first.sha256, prediction("head", 0.99))
    assert inbox.writer.unsaved and statuses(state)[first.sha256].status == "unlabeled"
    other = StoreWriter(state / "data", Events())
    with other.editing(save_now=True) as entries:
        apply_human_label(entries, state / "data", second.sha256, "hardhat", LABELS, 0.2, Events())
    inbox.flush()
    now = statuses(state)
    assert now[first.sha256].status == "pseudo" and (now[second.sha256].status, now[second.sha256].label) == (
        "human", "hardhat")
    assert inbox.counts()["labels"]["hardhat"] == {"train": 1, "test": 0} or \
        inbox.counts()["labels"]["hardhat"] == {"train": 0, "test": 1}


def test_a_version_1_index_loads_and_a_lost_entry_of_an_unlabeled_file_is_classified_again(tmp_path):
    state = tmp_path / "state"
    inbox = make_inbox(state)
    (human,) = file_images(state, inbox, "head", [jpeg(1)], "h")
    (frame,) = file_images(state, inbox, "unlabeled", [jpeg(2)])
    labeler_for(inbox).decide(frame.sha256, prediction("head", 0.5))
    inbox.flush()
    old = {"version": 1, "images": [{k: v for k, v in human.model_dump().items()
                                     if k in ("sha256", "label", "split", "size", "path")}]}
    (state / "data" / ".index.json").write_text(json.dumps(old))  # written by the agent before unlabeled images
    again = make_inbox(state)
    now = statuses(state)
    assert now[human.sha256] == human and (now[frame.sha256].status, now[frame.sha256].prediction) == (
        "unlabeled", None)
    assert [e.sha256 for e in labeler_for(again).follow(1)] == [frame.sha256]


def test_image_counts_of_unlabeled_images_are_strict_and_old_heartbeats_stay_valid():
    old = ImageCounts.model_validate({"labels": {"head": {"train": 3, "test": 1}}, "quarantined": 2, "pending": 0})
    assert (old.pseudo, old.review, old.unlabeled, old.total, old.without_label) == (0, 0, 0, 4, 0)
    new = ImageCounts.model_validate({"labels": {}, "pseudo": 5, "review": 7, "unlabeled": 1})
    assert new.without_label == 13
    for bad in ({"pseudo": -1}, {"review": "7"}, {"unlabeled": 1.5}, {"waiting": 1}):
        with pytest.raises(ValueError):
            ImageCounts.model_validate(bad)


def test_no_label_may_be_called_unlabeled(tmp_path):
    with pytest.raises(ValueError, match="'unlabeled'"):
        Inbox(tmp_path, ["head", "unlabeled"])


def test_while_another_process_holds_the_store_nothing_is_moved_and_nothing_is_lost(tmp_path):
    import fcntl

    state = tmp_path / "state"
    inbox = make_inbox(state)
    file_images(state, inbox, "head", [jpeg(1)], "h")
    (frame,) = file_images(state, inbox, "unlabeled", [jpeg(2)])
    waiting = drop(state, "unlabeled/next.jpg", jpeg(3))
    inbox.writer.lock_timeout = 0.2
    events = Events()
    held = os.open(state / "data", os.O_RDONLY)  # what `fed-agent label` holds while it labels
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        assert inbox.ingest().accepted == [] and waiting.exists()
        assert labeler_for(inbox, events).decide(frame.sha256, prediction("head", 0.99)) is None
        assert inbox.storage_problem is None  # busy is not broken
    finally:
        os.close(held)
    assert events.named("pseudo_label_deferred") and statuses(state)[frame.sha256].status == "unlabeled"
    assert [Path(src).name for src, _ in inbox.ingest().accepted] == ["next.jpg"]
