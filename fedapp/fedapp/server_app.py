"""ServerApp: seeded server-side init, artifact shipping, FedAvg on head weights, server eval.

Runs on the coordinator host (in the SuperLink's `flwr-serverapp` process). Everything it
learns goes to `output-dir`: progress.jsonl (one typed event per line, see progress.py,
read live by the coordinator) and head_final.npz (written atomically). Settings come typed
from `RunConfig` and go to the nodes typed as `TrainConfig`, so neither side spells a key.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from fed_common.files import atomic_write, sha256_file
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from .aggregation import Aggregation, PseudoLabelUse
from .artifacts import ARTIFACT_NAMES
from .embeddings import EmbeddingCache
from .head import WEIGHT_NAMES, accuracy, head_record, init_head, predict_proba
from .images import check_label_folders, scan_folder
from .logs import get_logger
from .progress import (ArtifactsShipped, CompletedEvent, FailedEvent, Progress, RoundEvent,
                       StartedEvent)
from .run_config import RunConfig, TrainConfig
from .strategy import CampaignError, DeadlineFedAvg, wait_for_nodes

app = ServerApp()


def ship_artifacts(grid: Grid, nodes: list[int], files: dict[str, Path], log) -> ArtifactsShipped:
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
    return ArtifactsShipped(shas=shas, shipped_bytes={str(k): v for k, v in shipped.items()})


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = RunConfig.from_context(context)
    if not cfg.output_dir:
        raise ValueError("run config output-dir is empty (the coordinator sets it per run)")
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(out / "progress.jsonl")
    log = get_logger(run=context.run_id, campaign=out.name)
    try:
        _run(grid, cfg, out, progress, log)
    except Exception as exc:
        progress.emit(FailedEvent(reason=str(exc)))
        log.error("campaign_failed", reason=str(exc))
        raise


def _server_test_set(cfg: RunConfig, backbone: Path, out: Path, log) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and labels of the server's own test photos (checked before any node waits)."""
    test_dir = Path(cfg.server_test_dir)
    check_label_folders(test_dir, cfg.labels)
    scan = scan_folder(test_dir, cfg.labels)
    for path, reason in scan.skipped:
        log.warning("server_image_skipped", file=path, reason=reason)
    if not scan.files:
        raise CampaignError(f"no usable images in the server test folder {test_dir}")
    cache = EmbeddingCache(out / "server-cache", backbone, sha256_file(backbone))
    return cache.matrix(scan.files)


def _run(grid: Grid, cfg: RunConfig, out: Path, progress: Progress, log) -> None:
    artifacts_dir = Path(cfg.artifacts_dir)
    files = {name: artifacts_dir / f"{name}.tflite" for name in ARTIFACT_NAMES}
    for path in files.values():
        if not path.is_file():
            raise CampaignError(f"artifact missing: {path}")
    x_test, y_test = _server_test_set(cfg, files["backbone"], out, log)

    nodes = wait_for_nodes(grid, cfg.min_nodes, cfg.min_completed_nodes, cfg.node_wait_seconds)
    shipping = ship_artifacts(grid, nodes, files, log)
    progress.emit(StartedEvent(nodes=len(nodes), artifacts=shipping))

    strategy = DeadlineFedAvg(min_nodes=cfg.min_nodes, min_completed=cfg.min_completed_nodes,
                              node_wait_seconds=cfg.node_wait_seconds, log=log,
                              aggregation=Aggregation(cfg.aggregation), trim_fraction=cfg.trim_fraction,
                              max_examples=cfg.max_examples_per_node,
                              pseudo=PseudoLabelUse(cfg.use_pseudo_labels, cfg.pseudo_label_weight))

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        weights = arrays.to_numpy_ndarrays()
        probs = predict_proba(weights, x_test)
        loss = float(-np.log(np.clip(probs[np.arange(len(y_test)), y_test], 1e-7, 1)).mean())
        acc = accuracy(weights, x_test, y_test)
        ledger = strategy.rounds.get(server_round)
        progress.emit(RoundEvent(round=server_round, server_accuracy=acc, server_loss=loss,
                                 **(ledger.event_fields() if ledger else {})))
        log.info("server_evaluation", round=server_round, accuracy=acc, loss=loss)
        return MetricRecord({"accuracy": acc, "loss": loss})

    train_config = TrainConfig(
        labels=cfg.labels, local_epochs=cfg.local_epochs, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, momentum=cfg.momentum, seed=cfg.seed, campaign=out.name,
        backbone_sha=shipping.shas["backbone"], trainer_sha=shipping.shas["trainer"],
        use_pseudo_labels=cfg.use_pseudo_labels, pseudo_label_weight=cfg.pseudo_label_weight,
    )
    initial = init_head(cfg.seed, classes=len(cfg.labels))
    result = strategy.start(
        grid=grid, initial_arrays=head_record(initial), num_rounds=cfg.rounds,
        timeout=cfg.round_timeout_seconds, train_config=ConfigRecord(train_config.to_record()),
        evaluate_fn=evaluate,
    )
    buf = io.BytesIO()
    np.savez(buf, **dict(zip(WEIGHT_NAMES, result.arrays.to_numpy_ndarrays())))
    atomic_write(out / "head_final.npz", buf.getvalue())
    progress.emit(CompletedEvent(rounds=cfg.rounds))
