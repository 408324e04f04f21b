"""ServerApp: seeded server-side init, artifact shipping, FedAvg on head weights, server eval.

Rounds: at most `rounds`; early_stop.py ends the campaign sooner once the server loss stops
improving (the CompletedEvent then names the round it converged at). Every round trip
polls for replies every 0.5 s (grid_poll.py), and the artifacts travel only to the nodes
whose first train reply says they lack them (artifact_shipping.py): no query round first.

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
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from .aggregation import Aggregation, PseudoLabelUse
from .artifact_shipping import ArtifactShipper
from .artifacts import ARTIFACT_NAMES
from .early_stop import Converged, EarlyStopping
from .embeddings import EmbeddingCache
from .grid_poll import FastPollGrid
from .head import WEIGHT_NAMES, accuracy, head_record, init_head, predict_proba
from .images import check_label_folders, scan_folder
from .logs import get_logger
from .progress import (ArtifactsShipped, CompletedEvent, FailedEvent, Progress, RoundEvent,
                       StartedEvent)
from .run_config import RunConfig, TrainConfig
from .sampling import NodeSampler
from .strategy import CampaignError, DeadlineFedAvg, wait_for_nodes

app = ServerApp()


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
        _run(FastPollGrid(grid), cfg, out, progress, log)
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


def _run(grid: FastPollGrid, cfg: RunConfig, out: Path, progress: Progress, log) -> None:
    artifacts_dir = Path(cfg.artifacts_dir)
    files = {name: artifacts_dir / f"{name}.tflite" for name in ARTIFACT_NAMES}
    for path in files.values():
        if not path.is_file():
            raise CampaignError(f"artifact missing: {path}")
    x_test, y_test = _server_test_set(cfg, files["backbone"], out, log)

    nodes = wait_for_nodes(grid, cfg.min_nodes, cfg.min_completed_nodes, cfg.node_wait_seconds)
    shipper = ArtifactShipper(files, log)
    progress.emit(StartedEvent(nodes=len(nodes), artifacts=ArtifactsShipped(shas=shipper.shas)))

    strategy = DeadlineFedAvg(min_nodes=cfg.min_nodes, min_completed=cfg.min_completed_nodes,
                              node_wait_seconds=cfg.node_wait_seconds, log=log,
                              aggregation=Aggregation(cfg.aggregation), trim_fraction=cfg.trim_fraction,
                              max_examples=cfg.max_examples_per_node,
                              pseudo=PseudoLabelUse(cfg.use_pseudo_labels, cfg.pseudo_label_weight),
                              sampler=NodeSampler(cfg.nodes_per_round, cfg.seed, out.name),
                              shipper=shipper)
    grid.follow_up = strategy.follow_up  # round 1 ships artifacts within the round (artifact_shipping.py)
    stopping = EarlyStopping(cfg.early_stop_min_delta, cfg.early_stop_patience, cfg.early_stop_min_rounds)

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        weights = arrays.to_numpy_ndarrays()
        probs = predict_proba(weights, x_test)
        loss = float(-np.log(np.clip(probs[np.arange(len(y_test)), y_test], 1e-7, 1)).mean())
        acc = accuracy(weights, x_test, y_test)
        ledger = strategy.rounds.get(server_round)
        progress.emit(RoundEvent(round=server_round, server_accuracy=acc, server_loss=loss,
                                 **(ledger.event_fields() if ledger else {})))
        log.info("server_evaluation", round=server_round, accuracy=acc, loss=loss)
        if stopping.observe(server_round, loss) and server_round < cfg.rounds:
            raise Converged(server_round, arrays, stopping.reason(server_round))
        return MetricRecord({"accuracy": acc, "loss": loss})

    train_config = TrainConfig(
        labels=cfg.labels, local_epochs=cfg.local_epochs, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, momentum=cfg.momentum, seed=cfg.seed, campaign=out.name,
        backbone_sha=shipper.shas["backbone"], trainer_sha=shipper.shas["trainer"],
        use_pseudo_labels=cfg.use_pseudo_labels, pseudo_label_weight=cfg.pseudo_label_weight,
    )
    initial = init_head(cfg.seed, classes=len(cfg.labels))
    try:
        final = strategy.start(
            grid=grid, initial_arrays=head_record(initial), num_rounds=cfg.rounds,
            timeout=cfg.round_timeout_seconds, train_config=ConfigRecord(train_config.to_record()),
            evaluate_fn=evaluate,
        ).arrays
        done = CompletedEvent(rounds=cfg.rounds)
    except Converged as converged:
        log.info("campaign_converged", round=converged.server_round, reason=converged.reason,
                 converged_round=stopping.best_round)
        final = converged.arrays
        done = CompletedEvent(rounds=converged.server_round, converged_round=stopping.best_round,
                              reason=converged.reason)
    buf = io.BytesIO()
    np.savez(buf, **dict(zip(WEIGHT_NAMES, final.to_numpy_ndarrays())))
    atomic_write(out / "head_final.npz", buf.getvalue())
    progress.emit(done)
