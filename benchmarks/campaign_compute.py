"""Benchmark: this design vs the seed's recipe, same data, same campaign shape, one run.

Campaign shape of the seed: 2 clients, 6 rounds x 20 local epochs, batch 8, the seed photos
(../shared/datasets). Both designs run in-process with the same FedAvg, so the figures are
compute and payload only; Flower's per-message overhead is the same for both and left out.

- this design: TFLite backbone once per image (embedding cache), TFLite head trainer
  (the agents' code path, tflite-runtime), head weights exchanged.
- seed recipe: Keras fit of the whole model (frozen backbone run every epoch), Adam,
  whole model exchanged each round.

Prints compute seconds, bytes exchanged (both directions, all clients, all rounds), server
accuracy on dataset_server/test, and the ratios. This design is timed `--repeats` times
(median reported); the seed recipe once (it takes minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The coordinator turns oneDNN off for reproducible exports; the seed recipe gets its fastest
# TensorFlow here so the comparison does not flatter this design.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FED_SHARED", REPO.parent / "shared"))

import numpy as np  # noqa: E402

from fedapp.embeddings import EmbeddingCache  # noqa: E402
from fedapp.head import HeadTrainer, accuracy, init_head  # noqa: E402
from fedapp.images import scan_folder  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks"))
from seed_recipe import (LABELS, build_seed_model, fedavg, images_and_targets,  # noqa: E402
                         model_accuracy, weights_bytes)


def this_design(art: Path, clients, server, args, cache_root: Path) -> dict:
    t0 = time.perf_counter()
    sha = "bench"
    data = []
    for scan in clients:
        cache = EmbeddingCache(cache_root, art / "backbone.tflite", sha)
        data.append(cache.matrix(scan.files))
    x_srv, y_srv = EmbeddingCache(cache_root, art / "backbone.tflite", sha).matrix(server.files)
    t_embed = time.perf_counter() - t0
    weights = init_head(args.seed)
    head_bytes = sum(w.nbytes for w in weights)
    t1 = time.perf_counter()
    for rnd in range(1, args.rounds + 1):
        results = []
        for x, y in data:
            trainer = HeadTrainer(str(art / "trainer.tflite"))
            trainer.set_weights(weights)
            trainer.fit(x, y, epochs=args.epochs, batch_size=args.batch, lr=0.01, momentum=0.9,
                        seed=args.seed * 1000 + rnd)
            results.append(trainer.get_weights())
        weights = fedavg(results, [len(y) for _, y in data])
    t_train = time.perf_counter() - t1
    return {"compute_s": t_embed + t_train, "embed_s": t_embed, "train_s": t_train,
            "bytes": head_bytes * 2 * len(data) * args.rounds,
            "server_accuracy": accuracy(weights, x_srv, y_srv)}


def seed_recipe(weights_file: str, clients, server, args) -> dict:
    data = [images_and_targets(s) for s in clients]
    x_srv, y_srv = images_and_targets(server)
    model = build_seed_model(weights_file, seed=args.seed)
    global_weights = model.get_weights()  # whole model, as the seed exchanged it
    model_bytes = weights_bytes(global_weights)
    t0 = time.perf_counter()
    for _ in range(args.rounds):
        results = []
        for x, y in data:
            model.set_weights(global_weights)
            model.fit(x, y, epochs=args.epochs, batch_size=args.batch, verbose=0)
            results.append(model.get_weights())
        global_weights = fedavg(results, [len(x) for x, _ in data])
    compute = time.perf_counter() - t0
    model.set_weights(global_weights)
    return {"compute_s": compute, "bytes": model_bytes * 2 * len(data) * args.rounds,
            "server_accuracy": model_accuracy(model, x_srv, y_srv)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(SHARED / "models/mobilenet_v2_1.00_160_no_top.weights.h5"))
    p.add_argument("--data", default=str(SHARED / "datasets"))
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-seed-recipe", action="store_true")
    args = p.parse_args()
    data = Path(args.data)
    clients = [scan_folder(data / f"dataset_client{i}" / "train", LABELS) for i in (1, 2)]
    server = scan_folder(data / "dataset_server" / "test", LABELS)
    with tempfile.TemporaryDirectory() as tmp:
        # Export in a child process: this process must not load TensorFlow before the
        # agents' code path (tflite-runtime) is timed.
        code = ("import sys; from pathlib import Path; from fed_coordinator.models.artifacts import "
                "export_agent_artifacts as e; print(e(sys.argv[1], 2, Path(sys.argv[2])))")
        out = subprocess.run([sys.executable, "-c", code, args.weights, str(Path(tmp) / "exports")],
                             check=True, capture_output=True, text=True).stdout
        art = Path(out.strip().splitlines()[-1])
        assert "tensorflow" not in sys.modules
        runs = [this_design(art, clients, server, args, Path(tmp) / f"cache{i}") for i in range(args.repeats)]
    ours = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    ours["compute_s_runs"] = [round(r["compute_s"], 2) for r in runs]
    report = {"machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
              "shape": vars(args), "this_design": ours}
    if not args.skip_seed_recipe:
        seed = seed_recipe(args.weights, clients, server, args)
        report["seed_recipe"] = seed
        report["compute_ratio"] = seed["compute_s"] / ours["compute_s"]
        report["bytes_ratio"] = seed["bytes"] / ours["bytes"]
        report["accuracy_points_diff"] = 100 * (ours["server_accuracy"] - seed["server_accuracy"])
    print(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
