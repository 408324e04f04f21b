"""Pseudo labels in training: a weight in the loss, or sampling? Measured on the shared photos.

Why in-process: the choice is about the learning only, so the campaign is replayed with the
pieces a real one uses and nothing else (as tests/champion_harness.py does): the ServerApp's
seeded `init_head`, the TFLite backbone embeddings (`EmbeddingCache`) and the TFLite head
trainer (`HeadTrainer.fit`, as the ClientApp calls it, with its `sample_weight`), FedAvg with
`fedapp.aggregation.aggregate` and the example count of `fedapp.example_count`. Per seed:

1. each client keeps `--labeled` (15%) of its training photos labeled per label, the first by
   SHA-256 (the rule benchmarks/pseudo_labels.py uses); the rest are unlabeled;
2. campaign 1 on the human labels only; its head, temperature-scaled on the server folder's
   calibration part as registration does, pseudo-labels the unlabeled photos the way the
   agent does (fed_agent.pseudo_labels: confidence >= `--threshold`, at most
   `--max-pseudo-ratio` x the class's human labels, in SHA-256 order);
3. campaign 2 from the same seed with those pseudo labels, once per way of using them:
   `weight w` (each pseudo label's loss times w, every epoch) and `sample p` (each epoch,
   each pseudo label joins with probability p, at full weight);
4. the fully labeled reference.

Accuracy is on photos no campaign trained on: the server folder's gate part (what the
champion gate scores, 18 photos) and, for resolution, that plus the clients' test folders
(the "held-out" column, 109 photos), with its mean log loss. Coordinator venv (TensorFlow,
for the export; about 40 s for five seeds):

    .venv/bin/python benchmarks/pseudo_label_weight.py --seeds 0 1 2 3 4 [--labeled 0.05 --max-pseudo-ratio 10]

What it measured (x86, 5 seeds; held-out accuracy mean / log loss; the fully labeled
reference 0.987 / 0.023 in every case):

    labeled, threshold, cap  pseudo (precision)  human only   weight 1     weight 0.5   weight 0.25  sample 0.5
    15%, 0.9, 1 (defaults)   62 (0.981)          0.991/0.090  0.991/0.136  0.989/0.115  0.989/0.108  0.989/0.124
    5%, 0.9, 10              200 (0.992)         0.976/0.093  0.985/0.138  0.985/0.106  0.985/0.098  0.980/0.130
    3%, 0.9, 10              120 (0.965)         0.958/0.133  0.965/0.189  0.965/0.148  0.961/0.137  0.965/0.187
    3%, 0.6, 10              120 (0.937)         0.958/0.133  0.969/0.191  0.967/0.161  0.971/0.145  0.965/0.192

So: with few human labels pseudo labels buy about one point; a weight does at least as well
as sampling the same expected share (0.5) and keeps the model less over-sure (sampling's
loss is weight 1's: each pseudo label it keeps weighs fully); 0.5 kept weight 1's accuracy
everywhere with about a quarter less log loss, 0.25 lost some accuracy once. At the agents'
defaults (15% labeled, cap 1) this data set is saturated: one photo in 109 either way.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import PHOTOS, WEIGHTS  # noqa: E402

LABELS = ["head", "hardhat"]
CLIENTS = ("dataset_client1", "dataset_client2")


@dataclass
class Client:
    x: np.ndarray  # every training photo's embedding
    y: np.ndarray  # its true label
    digests: list[str]
    human: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # indices kept labeled
    pseudo: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # indices pseudo-labeled
    pseudo_y: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # their pseudo labels


def load(cache) -> tuple[list[Client], dict[str, tuple[np.ndarray, np.ndarray]], tuple]:
    """The clients' training photos, the held-out sets and the server calibration part."""
    from fedapp.images import scan_folder

    from fed_coordinator.models.server_folder import split_server_folder

    clients = []
    for name in CLIENTS:
        files = scan_folder(PHOTOS / name / "train", LABELS).files
        x, y = cache.matrix(files)
        clients.append(Client(x, y, [f.digest for f in files]))
    split = split_server_folder(PHOTOS / "dataset_server" / "test", LABELS)
    client_tests = [f for name in CLIENTS for f in scan_folder(PHOTOS / name / "test", LABELS).files]
    held_out = {"gate": cache.matrix(split.gate), "held-out": cache.matrix(split.gate + client_tests)}
    return clients, held_out, cache.matrix(split.calibration)


def keep_labeled(client: Client, share: float) -> None:
    """Per label the first `share` of the photos by SHA-256 (at least 3) stay labeled."""
    kept = []
    for label in range(len(LABELS)):
        ordered = sorted(np.flatnonzero(client.y == label), key=lambda i: client.digests[i])
        kept += ordered[:max(3, round(share * len(ordered)))]
    client.human = np.array(sorted(kept))


def pseudo_label(client: Client, probs: np.ndarray, threshold: float, ratio: float) -> None:
    """The agent's rule: sure enough, and under the class cap, in SHA-256 order."""
    unlabeled = sorted(set(range(len(client.y))) - set(client.human.tolist()), key=lambda i: client.digests[i])
    human = np.bincount(client.y[client.human], minlength=len(LABELS))
    taken: list[tuple[int, int]] = []
    for i in unlabeled:
        label, confidence = int(probs[i].argmax()), float(probs[i].max())
        if confidence < threshold:
            continue
        if sum(1 for _, got in taken if got == label) + 1 > math.floor(ratio * human[label] + 1e-9):
            continue
        taken.append((i, label))
    client.pseudo = np.array([i for i, _ in taken], int)
    client.pseudo_y = np.array([label for _, label in taken], np.int32)


def local_training(trainer, client: Client, mode: tuple[str, float], s, seed: int) -> int:
    """Train on the client's human labels (+ pseudo labels per `mode`); its FedAvg count."""
    from fedapp.example_count import example_count

    kind, value = mode
    hx, hy = client.x[client.human], client.y[client.human].astype(np.int32)
    px, py = client.x[client.pseudo], client.pseudo_y
    fit = dict(batch_size=s.batch_size, lr=s.learning_rate, momentum=s.momentum)
    if kind == "sample":
        rng = np.random.default_rng(seed)
        for epoch in range(s.local_epochs):  # momentum carries over: fit() never resets it
            keep = rng.random(len(py)) < value
            trainer.fit(np.concatenate([hx, px[keep]]), np.concatenate([hy, py[keep]]), epochs=1,
                        seed=seed * 100 + epoch, **fit)
    else:
        weight = value if kind == "weight" else 0.0
        x, y = (np.concatenate([hx, px]), np.concatenate([hy, py])) if weight else (hx, hy)
        sample_weight = np.concatenate([np.ones(len(hy)), np.full(len(py), weight)]) if weight else None
        trainer.fit(x, y, epochs=s.local_epochs, seed=seed, sample_weight=sample_weight, **fit)
    return example_count(len(hy), len(py) if kind != "human" else 0, value if kind != "human" else 0.0)


def campaign(artifacts: Path, clients: list[Client], mode: tuple[str, float], s) -> list[np.ndarray]:
    """`s.rounds` FedAvg rounds from the seeded head, as the ServerApp runs them."""
    from fedapp.aggregation import Aggregation, CheckedReply, aggregate
    from fedapp.head import WEIGHT_NAMES, HeadTrainer, init_head

    weights = init_head(s.seed, classes=len(LABELS))
    for server_round in range(1, s.rounds + 1):
        replies = []
        for client in clients:
            trainer = HeadTrainer(str(artifacts / "trainer.tflite"))
            trainer.set_weights(weights)
            count = local_training(trainer, client, mode, s, s.seed * 1000 + server_round)
            replies.append(CheckedReply(dict(zip(WEIGHT_NAMES, trainer.get_weights())), count, {}))
        weights = aggregate(replies, Aggregation.FEDAVG)[0].to_numpy_ndarrays()
    return weights


def scores(head, held_out) -> dict[str, float]:
    """Accuracy on each held-out set, and the held-out log loss (finer than accuracy when
    every variant gets the same photos right)."""
    from fedapp.head import accuracy, predict_proba

    out = {name: accuracy(head, x, y) for name, (x, y) in held_out.items()}
    x, y = held_out["held-out"]
    out["loss"] = float(-np.log(np.clip(predict_proba(head, x)[np.arange(len(y)), y], 1e-7, 1)).mean())
    return out


def one_seed(artifacts, clients, held_out, calibration, seed: int, args) -> dict[str, dict]:
    from fedapp.calibration import calibrated, fit_temperature
    from fedapp.head import predict_proba
    from fedapp.run_config import RunSettings

    s = RunSettings(labels=LABELS, seed=seed)
    for client in clients:
        keep_labeled(client, args.labeled)
        client.pseudo, client.pseudo_y = np.zeros(0, int), np.zeros(0, np.int32)
    first = campaign(artifacts, clients, ("human", 0.0), s)
    temperature = fit_temperature(predict_proba(first, calibration[0]), calibration[1], 1e-12)
    stats = {"T": temperature, "pseudo": 0, "right": 0, "unlabeled": 0}
    for client in clients:
        pseudo_label(client, calibrated(predict_proba(first, client.x), temperature, 1e-12), args.threshold,
                     args.max_pseudo_ratio)
        stats["pseudo"] += len(client.pseudo)
        stats["right"] += int((client.y[client.pseudo] == client.pseudo_y).sum())
        stats["unlabeled"] += len(client.y) - len(client.human)
    results = {"human only": scores(first, held_out), "_stats": stats}
    for mode in [("weight", w) for w in args.weights] + [("sample", p) for p in args.samples]:
        results[f"{mode[0]} {mode[1]:g}"] = scores(campaign(artifacts, clients, mode, s), held_out)
    for client in clients:
        client.human = np.arange(len(client.y))
        client.pseudo, client.pseudo_y = np.zeros(0, int), np.zeros(0, np.int32)
    results["fully labeled"] = scores(campaign(artifacts, clients, ("human", 0.0), s), held_out)
    return results


def report(per_seed: list[dict], args) -> None:
    stats = [r.pop("_stats") for r in per_seed]
    pseudo, right = sum(s["pseudo"] for s in stats), sum(s["right"] for s in stats)
    print(f"{args.labeled:.0%} labeled, pseudo_threshold {args.threshold}, max_pseudo_ratio {args.max_pseudo_ratio}, "
          f"seeds {args.seeds}; per seed {stats[0]['unlabeled']} unlabeled photos, pseudo labels "
          f"{[s['pseudo'] for s in stats]}, precision {right / max(pseudo, 1):.3f}, "
          f"temperature {[round(s['T'], 2) for s in stats]}")
    print(f"{'variant':<16}{'gate (18)':>10}{'held-out (109)':>16}{'log loss':>10}   held-out per seed")
    for name in per_seed[0]:
        gate, loss = (statistics.mean(r[name][key] for r in per_seed) for key in ("gate", "loss"))
        held = [r[name]["held-out"] for r in per_seed]
        print(f"{name:<16}{gate:>10.3f}{statistics.mean(held):>16.3f}{loss:>10.4f}   "
              f"{' '.join(f'{h:.3f}' for h in held)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--labeled", type=float, default=0.15)
    parser.add_argument("--threshold", type=float, default=0.9, help="labeling.pseudo_threshold")
    parser.add_argument("--max-pseudo-ratio", type=float, default=1.0, help="labeling.max_pseudo_ratio")
    parser.add_argument("--weights", type=float, nargs="*", default=[1.0, 0.5, 0.25])
    parser.add_argument("--samples", type=float, nargs="*", default=[0.5])
    args = parser.parse_args()
    from fed_common.files import sha256_file
    from fedapp.embeddings import EmbeddingCache

    from fed_coordinator.models.artifacts import export_agent_artifacts

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pseudo-weight-") as tmp:
        artifacts = export_agent_artifacts(str(WEIGHTS), len(LABELS), Path(tmp) / "exports")
        backbone = artifacts / "backbone.tflite"
        clients, held_out, calibration = load(EmbeddingCache(Path(tmp) / "cache", backbone, sha256_file(backbone)))
        per_seed = [one_seed(artifacts, clients, held_out, calibration, seed, args) for seed in args.seeds]
    report(per_seed, args)
    print(f"wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
