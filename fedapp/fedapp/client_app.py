"""ClientApp: trains the head on the node's own photos with the TFLite interpreter only.

Runs in a fresh `flwr-clientapp` process per message on the agent, so it keeps nothing in
memory between rounds: the backbone/trainer come from the agent's artifact cache and the
embeddings from the embedding cache, both keyed by content hash.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from .artifacts import ARTIFACT_NAMES, ArtifactStore
from .embeddings import EmbeddingCache
from .head import HeadTrainer, accuracy
from .images import scan_folder
from .logs import get_logger

app = ClientApp()


def _node_settings(context: Context) -> tuple[str, Path, Path]:
    cfg = context.node_config
    if "data-dir" not in cfg:
        raise ValueError("node-config has no 'data-dir' (the folder with train/ and test/)")
    data_dir = Path(str(cfg["data-dir"]))
    default_cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fed-agent"
    cache_dir = Path(str(cfg.get("cache-dir", default_cache)))
    name = str(cfg.get("agent-name", f"node-{context.node_id}"))
    return name, data_dir, cache_dir


def _write_status(context: Context, status: dict) -> None:
    """Last training, for the agent daemon's heartbeat and `systemctl status` line."""
    target = context.node_config.get("status-file")
    if not target:
        return
    target = Path(str(target))
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(json.dumps(status))
    os.replace(tmp, target)


@app.query("artifacts")
def receive_artifacts(msg: Message, context: Context) -> Message:
    """Store shipped artifacts and report which hashes this node still lacks."""
    name, _, cache_dir = _node_settings(context)
    store = ArtifactStore(cache_dir)
    offer = msg.content["artifacts"]
    missing = []
    for artifact in ARTIFACT_NAMES:
        sha = str(offer[f"{artifact}-sha"])
        blob = offer.get(f"{artifact}-bytes")
        if blob:
            store.put(bytes(blob), sha)
        if not store.has(sha):
            missing.append(sha)
    reply = ConfigRecord({"agent": name, "missing": ",".join(missing)})
    return Message(RecordDict({"artifacts": reply}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    name, data_dir, cache_dir = _node_settings(context)
    cfg = msg.content["config"]
    labels = str(cfg["labels"]).split(",")
    log = get_logger(agent=name, run=context.run_id, round=int(cfg.get("server-round", 0)))
    store = ArtifactStore(cache_dir)
    backbone = store.require(str(cfg["backbone-sha"]))
    trainer_path = store.require(str(cfg["trainer-sha"]))

    t0 = time.perf_counter()
    train_scan = scan_folder(data_dir / "train", labels)
    test_scan = scan_folder(data_dir / "test", labels)
    skipped = train_scan.skipped + test_scan.skipped
    for path, reason in skipped:
        log.warning("image_skipped", file=path, reason=reason)
    if not train_scan.files:
        raise ValueError(f"no usable training images under {data_dir / 'train'} for labels {labels}")
    cache = EmbeddingCache(cache_dir, backbone, str(cfg["backbone-sha"]))
    x_train, y_train = cache.matrix(train_scan.files)
    x_test, y_test = cache.matrix(test_scan.files)
    t_embed = time.perf_counter() - t0

    trainer = HeadTrainer(str(trainer_path))
    trainer.set_weights(msg.content["arrays"].to_numpy_ndarrays())
    seed = int(cfg.get("seed", 0)) * 1000 + int(cfg.get("server-round", 0))
    loss, acc = trainer.fit(
        x_train, y_train,
        epochs=int(cfg["local-epochs"]), batch_size=int(cfg["batch-size"]),
        lr=float(cfg["learning-rate"]), momentum=float(cfg["momentum"]), seed=seed,
    )
    weights = trainer.get_weights()
    t_train = time.perf_counter() - t0 - t_embed
    test_acc = accuracy(weights, x_test, y_test) if len(y_test) else None
    log.info("trained", examples=len(y_train), loss=loss, accuracy=acc, test_accuracy=test_acc,
             embeddings_computed=cache.computed, embeddings_reused=cache.reused)
    _write_status(context, {
        "campaign": str(cfg.get("campaign", "")), "run_id": context.run_id,
        "round": int(cfg.get("server-round", 0)), "time": time.time(),
        "examples": int(len(y_train)), "train_accuracy": acc, "local_test_accuracy": test_acc,
        "backbone_sha": str(cfg["backbone-sha"]),
    })

    metrics = MetricRecord({
        "num-examples": int(len(y_train)),
        "train-loss": float(loss),
        "train-accuracy": float(acc),
        "test-accuracy": float(test_acc or 0.0),
        "test-examples": int(len(y_test)),
        "skipped-files": int(len(skipped)),
        "embed-seconds": float(t_embed),
        "train-seconds": float(t_train),
    })
    info = ConfigRecord({
        "agent": name,
        "skipped": "\n".join(f"{p}\t{r}" for p, r in skipped),
    })
    content = RecordDict({"arrays": ArrayRecord(weights), "metrics": metrics, "info": info})
    return Message(content, reply_to=msg)
