"""ServerApp: seeded server-side init, artifact shipping, FedAvg on head weights, server eval.

Runs on the coordinator host (in the SuperLink's `flwr-serverapp` process). Everything it
learns goes to `output-dir`: progress.jsonl (one line per event, read live by the
coordinator), head_final.npz and summary.json, each written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from .artifacts import ARTIFACT_NAMES, sha256_file
from .embeddings import EmbeddingCache
from .head import accuracy, init_head, predict_proba
from .images import check_label_folders, scan_folder
from .logs import get_logger
from .strategy import CampaignError, DeadlineFedAvg, wait_for_nodes

app = ServerApp()


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Progress:
    def __init__(self, path: Path) -> None:
        self.path = path

    def emit(self, event: str, **fields) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")


def ship_artifacts(grid: Grid, nodes: list[int], files: dict[str, Path], log) -> dict:
    """Ask each node which artifact hashes it lacks; send bytes only to those that do."""
    shas = {name: sha256_file(path) for name, path in files.items()}
    base = {f"{name}-sha": sha for name, sha in shas.items()}

    def ask(node_ids: list[int], with_bytes: dict[int, list[str]]) -> dict[int, str]:
        msgs = []
        for node in node_ids:
            record = dict(base)
            for name in with_bytes.get(node, []):
                record[f"{name}-bytes"] = files[name].read_bytes()
            msgs.append(Message(RecordDict({"artifacts": ConfigRecord(record)}), node,
                                "query.artifacts"))
        replies = grid.send_and_receive(msgs, timeout=300)
        out = {}
        for reply in replies:
            if reply.has_error():
                log.warning("artifact_query_failed", node=reply.metadata.src_node_id,
                            reason=reply.error.reason)
                continue
            out[reply.metadata.src_node_id] = str(reply.content["artifacts"]["missing"])
        return out

    first = ask(nodes, {})
    need = {node: [n for n in ARTIFACT_NAMES if shas[n] in missing.split(",")]
            for node, missing in first.items() if missing}
    shipped = {node: sum(files[n].stat().st_size for n in names) for node, names in need.items()}
    if need:
        second = ask(sorted(need), need)
        still = [node for node, missing in second.items() if missing]
        if still or len(second) < len(need):
            log.warning("artifact_ship_failed", nodes=still)
    log.info("artifacts_ready", shas=shas, shipped_bytes=shipped)
    return {"shas": shas, "shipped_bytes": {str(k): v for k, v in shipped.items()}}


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    out = Path(str(cfg["output-dir"]))
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(out / "progress.jsonl")
    log = get_logger(run=context.run_id, campaign=out.name)
    try:
        _run(grid, cfg, out, progress, log)
    except Exception as exc:
        progress.emit("failed", reason=str(exc))
        log.error("campaign_failed", reason=str(exc))
        raise


def _run(grid: Grid, cfg, out: Path, progress: Progress, log) -> None:
    labels = str(cfg["labels"]).split(",")
    artifacts_dir = Path(str(cfg["artifacts-dir"]))
    files = {name: artifacts_dir / f"{name}.tflite" for name in ARTIFACT_NAMES}
    for path in files.values():
        if not path.is_file():
            raise CampaignError(f"artifact missing: {path}")
    test_dir = Path(str(cfg["server-test-dir"]))
    check_label_folders(test_dir, labels)
    scan = scan_folder(test_dir, labels)
    for path, reason in scan.skipped:
        log.warning("server_image_skipped", file=path, reason=reason)
    if not scan.files:
        raise CampaignError(f"no usable images in the server test folder {test_dir}")
    backbone_sha = sha256_file(files["backbone"])
    x_test, y_test = EmbeddingCache(out / "server-cache", files["backbone"], backbone_sha).matrix(scan.files)

    min_nodes, min_completed = int(cfg["min-nodes"]), int(cfg["min-completed-nodes"])
    nodes = wait_for_nodes(grid, min_nodes, min_completed, float(cfg["node-wait-seconds"]))
    shipping = ship_artifacts(grid, nodes, files, log)
    progress.emit("started", nodes=len(nodes), artifacts=shipping)

    strategy = DeadlineFedAvg(min_nodes=min_nodes, min_completed=min_completed,
                              node_wait_seconds=float(cfg["node-wait-seconds"]), log=log)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        weights = arrays.to_numpy_ndarrays()
        probs = predict_proba(weights, x_test)
        loss = float(-np.log(np.clip(probs[np.arange(len(y_test)), y_test], 1e-7, 1)).mean())
        acc = accuracy(weights, x_test, y_test)
        info = strategy.rounds.get(server_round, {})
        progress.emit("round", round=server_round, server_accuracy=acc, server_loss=loss,
                      **{k: v for k, v in info.items() if k != "started"})
        log.info("server_evaluation", round=server_round, accuracy=acc, loss=loss)
        return MetricRecord({"accuracy": acc, "loss": loss})

    train_config = ConfigRecord({
        "labels": ",".join(labels),
        "local-epochs": int(cfg["local-epochs"]),
        "batch-size": int(cfg["batch-size"]),
        "learning-rate": float(cfg["learning-rate"]),
        "momentum": float(cfg["momentum"]),
        "seed": int(cfg["seed"]),
        "campaign": out.name,
        "backbone-sha": shipping["shas"]["backbone"],
        "trainer-sha": shipping["shas"]["trainer"],
    })
    initial = init_head(int(cfg["seed"]), classes=len(labels))
    result = strategy.start(
        grid=grid, initial_arrays=ArrayRecord(initial), num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout-seconds"]), train_config=train_config,
        evaluate_fn=evaluate,
    )
    final = result.arrays.to_numpy_ndarrays()
    import io

    buf = io.BytesIO()
    np.savez(buf, **{name: w for name, w in zip(("w0", "b0", "w1", "b1"), final)})
    atomic_write(out / "head_final.npz", buf.getvalue())
    progress.emit("completed", rounds=int(cfg["num-server-rounds"]))
