"""ClientApp: trains the head on the node's own photos with the TFLite interpreter only.

Runs in a fresh `flwr-clientapp` process per message on the agent, so it keeps nothing in
memory between rounds: the backbone/trainer come from the agent's artifact cache and the
embeddings from the embedding cache, both keyed by content hash. What it is told comes in
typed: the node's settings as `NodeConfig` (the agent writes them with the same model) and
each round's as `TrainConfig` (the ServerApp writes them with the same model).

With `use_pseudo_labels` the agent's pseudo-labeled images join the training set (their
embeddings through the same cache, the pseudo label as target, `pseudo_label_weight` on their
loss); the local test set is the human-labeled test split only. The reply says how many of
each it used (`human-examples`, `pseudo-examples`), and `num-examples`, FedAvg's weight, is
`example_count` of the two (fedapp.example_count), which the ServerApp checks.

A train message arriving while the Pi is under-voltage now or at/above `training.max_temp_c`
(the agent passes it and the paths to read in NodeConfig) is declined before any work: the
reply is a `declined` record with the reason, which the ServerApp counts as declined, not
failed, and the Decline is written to the agent's `decline-file` for its heartbeat.

A train message naming artifact hashes this node does not hold is answered with a `missing`
record, not an error: the ServerApp then ships them and sends the message again, so the
nightly campaign needs no artifact query round trip first (fedapp.artifact_shipping).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
from fed_common import pi_health
from fed_common.node_config import LastTraining, NodeConfig
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .artifact_shipping import missing_reply
from .artifacts import ARTIFACT_NAMES, ArtifactStore
from .embeddings import EmbeddingCache
from .example_count import example_count
from .head import HeadTrainer, accuracy, head_record
from .logs import get_logger
from .node_data import load_node_data, load_pseudo_labeled
from .run_config import TrainConfig

__all__ = ["app", "load_node_data"]

app = ClientApp()


@app.query("artifacts")
def receive_artifacts(msg: Message, context: Context) -> Message:
    """Store shipped artifacts and report which hashes this node still lacks."""
    node = NodeConfig.from_flwr(context.node_config)
    store = ArtifactStore(node.cache_dir)
    offer = msg.content["artifacts"]
    missing = []
    for artifact in ARTIFACT_NAMES:
        sha = str(offer[f"{artifact}-sha"])
        blob = offer.get(f"{artifact}-bytes")
        if blob:
            store.put(bytes(blob), sha)
        if not store.has(sha):
            missing.append(sha)
    reply = ConfigRecord({"agent": node.agent_name, "missing": ",".join(missing)})
    return Message(RecordDict({"artifacts": reply}), reply_to=msg)


@dataclass
class TrainingSet:
    """What one round trains and tests on: human labels first, then pseudo labels (train side
    only, weighted), and the human-labeled local test split."""

    x: np.ndarray
    y: np.ndarray
    sample_weight: Optional[np.ndarray]  # None: every example weighs 1 (no pseudo labels)
    human: int
    pseudo: int
    x_test: np.ndarray
    y_test: np.ndarray
    skipped: list[tuple[str, str]]


def training_set(node: NodeConfig, cfg: TrainConfig, cache: EmbeddingCache, log) -> TrainingSet:
    """The node's images as embeddings (through the cache); pseudo-labeled ones only when the
    campaign asks for them, never in the local test set. A file whose embedding is cached
    (the agent embeds at ingest) is not read, only checked to be there (fedapp.node_data)."""
    train_files, test_files, skipped = load_node_data(node, cfg.labels, cache.has)
    pseudo_files = []
    if cfg.use_pseudo_labels:
        pseudo_files, pseudo_skipped = load_pseudo_labeled(node, cfg.labels, cache.has)
        skipped = skipped + pseudo_skipped
    for path, reason in skipped:
        log.warning("image_skipped", file=path, reason=reason)
    if not train_files:  # pseudo labels add to a person's labels, never stand in for them
        raise ValueError(f"no usable training images under {node.data_dir / 'train'} "
                         f"for labels {cfg.labels}")
    x, y = cache.matrix(train_files)
    x_test, y_test = cache.matrix(test_files)
    if not pseudo_files:
        return TrainingSet(x, y, None, len(y), 0, x_test, y_test, skipped)
    x_pseudo, y_pseudo = cache.matrix(pseudo_files)
    weight = np.concatenate([np.ones(len(y), np.float32),
                             np.full(len(y_pseudo), cfg.pseudo_label_weight, np.float32)])
    return TrainingSet(np.concatenate([x, x_pseudo]), np.concatenate([y, y_pseudo]), weight,
                       len(y), len(y_pseudo), x_test, y_test, skipped)


def health_decline(node: NodeConfig, cfg: TrainConfig) -> Optional[pi_health.Decline]:
    """Why this Pi must not train now (read here, in this process, when the message arrives)."""
    firmware = pi_health.read_throttled(node.throttled_file or pi_health.THROTTLED_FILE)
    health = firmware.model_copy(update={"max_temp_c": node.max_temp_c})
    celsius = pi_health.cpu_temperature_c(node.thermal_dir or pi_health.THERMAL_DIR)
    return pi_health.decline(health, celsius, cfg.campaign, cfg.server_round)


def _declined_reply(msg: Message, node: NodeConfig, declined: pi_health.Decline, log) -> Message:
    log.warning("train_declined", reason=declined.reason)
    if node.decline_file is not None:
        declined.write(node.decline_file)
    reply = ConfigRecord({"agent": node.agent_name, "reason": declined.reason})
    return Message(RecordDict({"declined": reply}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    node = NodeConfig.from_flwr(context.node_config)
    cfg = TrainConfig.from_record(msg.content["config"])
    log = get_logger(agent=node.agent_name, run=context.run_id, round=cfg.server_round)
    declined = health_decline(node, cfg)
    if declined is not None:
        return _declined_reply(msg, node, declined, log)
    store = ArtifactStore(node.cache_dir)
    missing = [sha for sha in (cfg.backbone_sha, cfg.trainer_sha) if not store.has(sha)]
    if missing:  # the ServerApp ships them and sends this message again (artifact_shipping.py)
        log.info("artifacts_missing", missing=[sha[:12] for sha in missing])
        return missing_reply(msg, node.agent_name, missing)
    backbone = store.require(cfg.backbone_sha)
    trainer_path = store.require(cfg.trainer_sha)

    t0 = time.perf_counter()
    cache = EmbeddingCache(node.cache_dir, backbone, cfg.backbone_sha)
    data = training_set(node, cfg, cache, log)
    t_embed = time.perf_counter() - t0

    trainer = HeadTrainer(str(trainer_path))
    trainer.set_weights(msg.content["arrays"].to_numpy_ndarrays())
    loss, acc = trainer.fit(
        data.x, data.y, epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.learning_rate,
        momentum=cfg.momentum, seed=cfg.seed * 1000 + cfg.server_round, sample_weight=data.sample_weight,
    )
    weights = trainer.get_weights()
    t_train = time.perf_counter() - t0 - t_embed
    test_acc = accuracy(weights, data.x_test, data.y_test) if len(data.y_test) else None
    examples = example_count(data.human, data.pseudo, cfg.pseudo_label_weight)
    log.info("trained", examples=examples, human_examples=data.human, pseudo_examples=data.pseudo, loss=loss,
             accuracy=acc, test_accuracy=test_acc, embeddings_computed=cache.computed,
             embeddings_reused=cache.reused)
    if node.status_file is not None:  # for the agent's heartbeat and `systemctl status` line
        LastTraining.now(campaign=cfg.campaign, run_id=context.run_id, round=cfg.server_round,
                         examples=len(data.y), train_accuracy=acc, local_test_accuracy=test_acc,
                         backbone_sha=cfg.backbone_sha).write(node.status_file)

    metrics = MetricRecord({
        "num-examples": examples,
        "human-examples": data.human,
        "pseudo-examples": data.pseudo,
        "train-loss": float(loss),
        "train-accuracy": float(acc),
        "test-accuracy": float(test_acc or 0.0),
        "test-examples": int(len(data.y_test)),
        "skipped-files": int(len(data.skipped)),
        "embed-seconds": float(t_embed),
        "train-seconds": float(t_train),
        "embeddings-computed": int(cache.computed),  # 0 once the agent embedded every image at ingest
        "embeddings-reused": int(cache.reused),
    })
    return _reply(msg, weights, metrics, node.agent_name, data.skipped)


def _reply(msg: Message, weights: list[np.ndarray], metrics: MetricRecord, agent: str,
           skipped: list[tuple[str, str]]) -> Message:
    """Weights, metrics and the skipped files (one `path<TAB>reason` line each)."""
    info = ConfigRecord({"agent": agent, "skipped": "\n".join(f"{p}\t{r}" for p, r in skipped)})
    content = RecordDict({"arrays": head_record(weights), "metrics": metrics, "info": info})
    return Message(content, reply_to=msg)
