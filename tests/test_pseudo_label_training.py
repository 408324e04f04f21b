"""Training with pseudo labels (issue 11, item 5): the ClientApp, its reply, the server's checks.

The ClientApp is served a real train message in-process (Flower's own routing, as
agent_serve_train.py does on the agent) with real photos and the real TFLite backbone and
trainer, over an image store laid out as the agent's inbox and pseudo-labeler leave it: human
labels in data/<split>/<label>/, pseudo-labeled and review images in data/unlabeled/ with
their index entries. The reply checks and DeadlineFedAvg are driven directly with replies
that lie about their label counts: each such node is failed with its reason, the round goes
on with the others.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from fed_common.files import sha256_bytes, sha256_file
from fed_common.node_config import NodeConfig
from fed_common.store import ImageStore, IndexEntry, StoredPrediction
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from conftest import PHOTOS, needs_shared
from fedapp.aggregation import (Aggregation, PseudoLabelUse, ReplyRejected, aggregate, array_specs,
                                check_reply)
from fedapp.example_count import example_count
from fedapp.head import head_record, init_head
from fedapp.node_data import HASH_CHANGED, PSEUDO_OUTSIDE, load_pseudo_labeled
from fedapp.run_config import RunConfig, TrainConfig

LABELS = ["head", "hardhat"]
HUMAN = {"train": 5, "test": 3}  # photos per label
PSEUDO_PER_LABEL = 4
SENT = head_record(init_head(0))
SPECS = array_specs(SENT)


def unlabeled_entry(data_dir, content: bytes, status: str, label: str | None) -> IndexEntry:
    """An image in data/unlabeled/ with the entry the agent's pseudo-labeler writes for it."""
    sha = sha256_bytes(content)
    path = data_dir / "unlabeled" / f"{sha[:16]}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    guess = (StoredPrediction(label=label, confidence=0.97, model_version=1, time="2025-01-01T00:00:00Z")
             if label else None)
    return IndexEntry(sha256=sha, label=None, split="unlabeled", size=len(content),
                      path=path.relative_to(data_dir).as_posix(), status=status, prediction=guess)


def agent_store(root) -> tuple:
    """data/ as the agent leaves it; returns (data dir, pseudo entries by sha)."""
    data = root / "data"
    for split, count in HUMAN.items():
        for label in LABELS:
            (data / split / label).mkdir(parents=True)
            for photo in sorted((PHOTOS / "dataset_client1" / split / label).iterdir())[:count]:
                shutil.copy(photo, data / split / label / photo.name)
    entries = {}
    for label in LABELS:  # other photos of the same kind, pseudo-labeled by "the running model"
        photos = sorted((PHOTOS / "dataset_client2" / "train" / label).iterdir())
        for photo in photos[:PSEUDO_PER_LABEL]:
            entry = unlabeled_entry(data, photo.read_bytes(), "pseudo", label)
            entries[entry.sha256] = entry
        review = unlabeled_entry(data, photos[-1].read_bytes(), "review", label)  # a person decides these
        entries[review.sha256] = review
    ImageStore(data).write_index(entries)  # the human-labeled files are found by their place
    return data, {sha: e for sha, e in entries.items() if e.status == "pseudo"}


def serve_train(monkeypatch, data, cache, artifacts, **settings) -> Message:
    """One train message through the real ClientApp, as flwr-clientapp serves it."""
    from flwr.supercore.task_identity import TaskIdentity

    from fedapp.artifacts import ArtifactStore
    from fedapp.client_app import app

    for name, value in (("_run_id", 7), ("_node_id", 42), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value, raising=False)
    store = ArtifactStore(cache)
    shas = {}
    for name in ("backbone", "trainer"):
        path = artifacts / f"{name}.tflite"
        shas[name] = sha256_file(path)
        store.put(path.read_bytes(), shas[name])
    node = NodeConfig(data_dir=data, cache_dir=cache, agent_name="pi-1")
    context = Context(run_id=7, node_id=42, node_config={"data-dir": str(data), "cache-dir": str(cache),
                                                         "agent-name": node.agent_name},
                      state=RecordDict(), run_config={})
    config = TrainConfig(labels=LABELS, local_epochs=2, batch_size=4, learning_rate=0.01, momentum=0.9, seed=0,
                         campaign="c-pseudo", backbone_sha=shas["backbone"], trainer_sha=shas["trainer"],
                         server_round=1, **settings)
    msg = Message(RecordDict({"arrays": SENT, "config": ConfigRecord(config.to_record())}), 42, "train")
    return app(msg, context)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("pseudo-store")
    return root, *agent_store(root)


@needs_shared
def test_pseudo_labels_are_used_only_when_the_campaign_asks_and_only_to_train(store_root, agent_artifacts,
                                                                              monkeypatch, tmp_path):
    _, data, pseudo = store_root
    humans, tests = HUMAN["train"] * len(LABELS), HUMAN["test"] * len(LABELS)
    off = serve_train(monkeypatch, data, tmp_path / "cache-off", agent_artifacts).content["metrics"]
    assert (off["num-examples"], off["human-examples"], off["pseudo-examples"]) == (humans, humans, 0)
    assert off["test-examples"] == tests
    # nothing of data/unlabeled/ was even decoded: one cached embedding per human image
    assert len(list((tmp_path / "cache-off").glob("emb-*/*.npy"))) == humans + tests

    on = serve_train(monkeypatch, data, tmp_path / "cache-on", agent_artifacts, use_pseudo_labels=True,
                     pseudo_label_weight=0.5).content["metrics"]
    assert (on["human-examples"], on["pseudo-examples"]) == (humans, len(pseudo))
    assert on["num-examples"] == humans + len(pseudo) // 2 == example_count(humans, len(pseudo), 0.5)
    assert on["test-examples"] == tests  # a pseudo-labeled image is never a local test image
    cached = {p.stem for p in (tmp_path / "cache-on").glob("emb-*/*.npy")}
    assert len(cached) == humans + tests + len(pseudo)  # the review images are not training data
    assert set(pseudo) <= cached


@needs_shared
def test_the_pseudo_label_is_the_target_and_its_weight_is_in_the_loss(store_root, agent_artifacts,
                                                                       monkeypatch, tmp_path):
    """The reply's head is exactly what the TFLite trainer makes of the human embeddings plus
    the pseudo ones, with their pseudo labels and the weight (replayed here step for step)."""
    from fedapp.embeddings import EmbeddingCache
    from fedapp.head import HeadTrainer
    from fedapp.node_data import load_node_data

    _, data, _ = store_root
    replies = {w: serve_train(monkeypatch, data, tmp_path / f"cache-{w}", agent_artifacts, use_pseudo_labels=True,
                              pseudo_label_weight=w).content["arrays"].to_numpy_ndarrays() for w in (0.5, 1.0)}
    node = NodeConfig(data_dir=data, cache_dir=tmp_path / "cache-0.5", agent_name="pi-1")
    train_files = load_node_data(node, LABELS)[0]
    pseudo_files, skipped = load_pseudo_labeled(node, LABELS)
    assert skipped == [] and sorted(f.label for f in pseudo_files) == [0] * PSEUDO_PER_LABEL + [1] * PSEUDO_PER_LABEL
    backbone = agent_artifacts / "backbone.tflite"
    cache = EmbeddingCache(tmp_path / "cache-0.5", backbone, sha256_file(backbone))
    x, y = cache.matrix(train_files + pseudo_files)
    assert cache.computed == 0  # the same cache the ClientApp filled
    weight = np.array([1.0] * len(train_files) + [0.5] * len(pseudo_files), np.float32)
    trainer = HeadTrainer(str(agent_artifacts / "trainer.tflite"))
    trainer.set_weights(SENT.to_numpy_ndarrays())
    trainer.fit(x, y, epochs=2, batch_size=4, lr=0.01, momentum=0.9, seed=1, sample_weight=weight)
    for got, want in zip(replies[0.5], trainer.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert not all(np.array_equal(a, b) for a, b in zip(replies[0.5], replies[1.0]))


def test_pseudo_labels_read_from_the_index_and_checked_like_any_image(tmp_path):
    from test_fedapp_contracts import jpeg

    data = tmp_path / "data"
    entries = [unlabeled_entry(data, jpeg(1), "pseudo", "head"), unlabeled_entry(data, jpeg(2), "pseudo", "cat"),
               unlabeled_entry(data, jpeg(3), "review", "hardhat"), unlabeled_entry(data, jpeg(4), "unlabeled", None),
               unlabeled_entry(data, jpeg(5), "pseudo", "hardhat")]
    changed = unlabeled_entry(data, jpeg(6), "pseudo", "head")
    (data / changed.path).write_bytes(jpeg(7))  # replaced after the agent indexed it
    inside_split = data / "train" / "head" / "x.jpg"  # a hand-edited index: a pseudo label on a split
    inside_split.parent.mkdir(parents=True)
    inside_split.write_bytes(jpeg(8))
    odd = IndexEntry(sha256=sha256_bytes(jpeg(8)), label=None, split="unlabeled", size=1, path="train/head/x.jpg",
                     status="pseudo", prediction=entries[0].prediction)
    ImageStore(data).write_index({e.sha256: e for e in entries + [changed, odd]})
    node = NodeConfig(data_dir=data, cache_dir=tmp_path / "cache", agent_name="pi-1")
    files, skipped = load_pseudo_labeled(node, LABELS)
    used = sorted([entries[0], entries[4]], key=lambda e: e.path)  # not "cat", review or unlabeled ones
    assert [(f.digest, LABELS[f.label]) for f in files] == [(e.sha256, e.prediction.label) for e in used]
    assert dict((p.rsplit("/", 1)[-1], r) for p, r in skipped) == {
        changed.path.rsplit("/", 1)[-1]: HASH_CHANGED, "x.jpg": PSEUDO_OUTSIDE}


# -- the reply checks ----------------------------------------------------------------------

def reply(examples=10, human=10, pseudo=0, **extra) -> RecordDict:
    metrics = {"num-examples": examples, "train-loss": 0.5, **extra}
    if human is not None:
        metrics["human-examples"] = human
    if pseudo is not None:
        metrics["pseudo-examples"] = pseudo
    return RecordDict({"arrays": ArrayRecord({n: Array(a.numpy()) for n, a in SENT.items()}),
                       "metrics": MetricRecord(metrics)})


ON = PseudoLabelUse(True, 0.5)
OFF = PseudoLabelUse(False, 0.5)
BAD_COUNTS = {  # reply, campaign's use, words the reason must contain
    "pseudo while off": (lambda: reply(12, 10, 4), OFF, "'pseudo-examples' = 4 but campaign.use_pseudo_labels is off"),
    "negative pseudo": (lambda: reply(10, 10, -2), ON, "'pseudo-examples' = -2 is outside 0..1000"),
    "float pseudo": (lambda: reply(12, 10, 4.0), ON, "'pseudo-examples' must be an integer, got 4.0"),
    "list pseudo": (lambda: reply(12, 10, [4]), ON, "'pseudo-examples' must be an integer"),
    "huge pseudo": (lambda: reply(12, 10, 10**9), ON, "'pseudo-examples' = 1000000000 is outside 0..1000"),
    "no human label": (lambda: reply(2, 0, 4), ON, "'human-examples' = 0 is outside 1..1000"),
    "pseudo counted whole": (lambda: reply(14, 10, 4), ON, "'num-examples' = 14 does not match 10 human + 4 pseudo "
                             "labels at weight 0.5 (= 12)"),
    "inflated examples": (lambda: reply(900, 10, 0), OFF, "'num-examples' = 900 does not match 10 human + 0 pseudo"),
    "pseudo count missing": (lambda: reply(10, 10, None), OFF, "reply has no metric 'pseudo-examples'"),
    "counts missing while on": (lambda: reply(10, None, None), ON, "reply has no metric 'human-examples'"),
}


@pytest.mark.parametrize("case", sorted(BAD_COUNTS))
def test_a_reply_whose_label_counts_do_not_fit_is_rejected_with_the_reason(case):
    make, use, words = BAD_COUNTS[case]
    with pytest.raises(ReplyRejected, match=re.escape(words)):
        check_reply(make(), SPECS, 1000, use)


def test_good_counts_pass_and_fedavg_weighs_by_human_plus_weighted_pseudo():
    a = check_reply(reply(12, 10, 4), SPECS, 1000, ON)
    b = check_reply(reply(30, 30, 0), SPECS, 1000, ON)
    assert (a.num_examples, a.human_examples, a.pseudo_examples) == (12, 10, 4)
    old = check_reply(reply(10, None, None), SPECS, 1000, OFF)  # a ClientApp that does not say: as before
    assert (old.human_examples, old.pseudo_examples) == (None, None)
    metrics = aggregate([a, b], Aggregation.FEDAVG)[1]
    assert (metrics["num-examples"], metrics["human-examples"], metrics["pseudo-examples"]) == (42, 40, 4)
    assert "human-examples" not in aggregate([a, old], Aggregation.FEDAVG)[1]


def test_a_node_lying_about_its_pseudo_labels_is_failed_and_the_round_goes_on(monkeypatch):
    """DeadlineFedAvg.aggregate_train, as the ServerApp runs it: pi-2's reply says 4 pseudo
    labels in a campaign without them; it is a failed node with that reason, pi-1 counts."""
    from flwr.supercore.task_identity import TaskIdentity

    from fedapp.strategy import DeadlineFedAvg, RoundLedger

    for name, value in (("_run_id", 7), ("_node_id", 1), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, name, value, raising=False)
    strategy = DeadlineFedAvg(min_nodes=2, min_completed=1, node_wait_seconds=1, log=_Quiet(),
                              max_examples=1000, pseudo=OFF)
    strategy.rounds[1] = RoundLedger(2, 0, SPECS)
    replies = []
    for node_id, agent, content in ((11, "pi-1", reply(10, 10, 0)), (12, "pi-2", reply(12, 10, 4))):
        content["info"] = ConfigRecord({"agent": agent, "skipped": ""})
        replies.append(Message(content, reply_to=Message(RecordDict(), node_id, "train")))
    arrays, metrics = strategy.aggregate_train(1, replies)
    ledger = strategy.rounds[1]
    assert [(p.agent, p.num_examples, p.human_examples, p.pseudo_examples) for p in ledger.participants] == \
        [("pi-1", 10, 10, 0)]
    assert [(f.agent, f.node_id) for f in ledger.failures] == [("pi-2", 12)]
    assert ledger.failures[0].reason == ("reply rejected: metric 'pseudo-examples' = 4 but "
                                         "campaign.use_pseudo_labels is off")
    assert metrics["num-examples"] == 10 and arrays is not None


class _Quiet:
    def info(self, *args, **kwargs):
        pass

    warning = info


def test_the_settings_reach_the_nodes_typed():
    cfg = RunConfig(use_pseudo_labels=True, pseudo_label_weight=0.25)
    assert RunConfig.from_flwr(cfg.to_flwr()) == cfg
    assert cfg.to_flwr()["use-pseudo-labels"] is True and cfg.to_flwr()["pseudo-label-weight"] == 0.25
    assert RunConfig().use_pseudo_labels is False
    with pytest.raises(ValueError, match="pseudo_label_weight"):
        RunConfig(pseudo_label_weight=1.5)
    with pytest.raises(ValueError, match="pseudo_label_weight"):
        RunConfig(pseudo_label_weight=0)
    record = TrainConfig(labels=LABELS, local_epochs=1, batch_size=1, learning_rate=0.1, momentum=0, seed=0,
                         campaign="c", backbone_sha="ab" * 32, trainer_sha="ab" * 32, use_pseudo_labels=True,
                         pseudo_label_weight=0.25).to_record()
    parsed = TrainConfig.from_record(ConfigRecord(record))
    assert (parsed.use_pseudo_labels, parsed.pseudo_label_weight) == (True, 0.25)
