"""What a round's data loading costs the ClientApp, before and after embeddings at ingest.

One client's photos (dataset_client1: train and test, ~250) are filed as the agent's inbox
files them (data/<split>/<label>/<sha[:16]>.jpg and the index), in a temporary folder. Then,
in the agent venv (tflite-runtime, the ClientApp's code path, never TensorFlow):

- round 1, before: the cache is empty, so the ClientApp reads, hashes, decodes and embeds
  every photo (what `embed-seconds` of round 1 was for every new photo);
- round 1, after: the agent embedded them at ingest (fed_agent.embedder, timed here too: the
  cost moved off the round, at nice 19 while idle), so the round's loading is the warm case;
- every round, before (`load_node_data` reading every file) vs after (`load_node_data` with
  the cache's `has`: an embedded file is only stat'ed), the cache warm, median of --runs.

The photos are in the page cache after the first read, so "before" flatters an SD card.

    .venv-agent/bin/python benchmarks/client_data_loading.py --runs 7
    (the backbone is exported once with the coordinator venv, or give --artifacts DIR)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FED_SHARED", REPO.parent / "shared"))
PHOTOS = SHARED / "datasets" / "dataset_client1"
WEIGHTS = SHARED / "models" / "mobilenet_v2_1.00_160_no_top.weights.h5"
LABELS = ["head", "hardhat"]
EXPORT = ("from fed_coordinator.models.artifacts import export_agent_artifacts; import sys; "
          "print(export_agent_artifacts(sys.argv[1], 2, __import__('pathlib').Path(sys.argv[2])))")


def artifacts(given: str | None) -> Path:
    """The TFLite backbone's folder (exported by the coordinator venv, cached in /tmp)."""
    if given:
        return Path(given)
    out = subprocess.run([str(REPO / ".venv" / "bin" / "python"), "-c", EXPORT, str(WEIGHTS),
                          str(Path(tempfile.gettempdir()) / "fedfleet-bench-exports")],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def agent_store(root: Path) -> Path:
    """data/ as the inbox leaves it for these photos: files by hash, and the index."""
    from fed_common.files import sha256_file
    from fed_common.store import ImageStore

    data = root / "data"
    for split in ("train", "test"):
        for label in LABELS:
            (data / split / label).mkdir(parents=True)
            for photo in sorted((PHOTOS / split / label).iterdir()):
                shutil.copy(photo, data / split / label / f"{sha256_file(photo)[:16]}{photo.suffix}")
    store = ImageStore(data)
    store.write_index(store.reconciled())
    return data


def load(node, cache, use_index: bool) -> tuple[float, int]:
    """One round's loading as training_set does it: (seconds, images)."""
    from fedapp.node_data import load_node_data

    t0 = time.perf_counter()
    train, test, skipped = load_node_data(node, LABELS, cache.has if use_index else None)
    cache.matrix(train)
    cache.matrix(test)
    assert not skipped, skipped
    return time.perf_counter() - t0, len(train) + len(test)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown cpu")
    load_avg = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), load average {load_avg}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs of each warm case (median printed)")
    parser.add_argument("--cold-runs", type=int, default=3, help="runs of the cold round 1 (each ~15 s)")
    parser.add_argument("--artifacts", help="folder with backbone.tflite (default: export it)")
    args = parser.parse_args()
    art = artifacts(args.artifacts)

    from fed_common.files import sha256_file
    from fed_common.node_config import LastTraining, NodeConfig
    from fed_common.store import ImageStore

    from fed_agent.embedder import Embedder
    from fedapp.embeddings import EmbeddingCache
    from fedapp.tflite import backend

    backbone, sha = art / "backbone.tflite", sha256_file(art / "backbone.tflite")
    with tempfile.TemporaryDirectory() as tmp:
        data = agent_store(Path(tmp))
        cold, ingest = [], []
        for run in range(args.cold_runs):
            node = NodeConfig(data_dir=data, cache_dir=Path(tmp) / f"cold-{run}", agent_name="bench")
            cold.append(load(node, EmbeddingCache(node.cache_dir, backbone, sha), True)[0])
            cache_dir = Path(tmp) / f"ingest-{run}"  # what the agent's embedder spends on them instead
            (cache_dir / "artifacts").mkdir(parents=True)
            shutil.copy(backbone, cache_dir / "artifacts" / f"{sha}.tflite")
            status = Path(tmp) / "last_training.json"  # as a campaign's ClientApp leaves it
            LastTraining.now(run_id=1, round=1, examples=0, backbone_sha=sha).write(status)
            worker = Embedder(lambda: ImageStore(data).reconciled(ImageStore(data).read_index()), data,
                              cache_dir, status, lambda: False, _Quiet(), batch=10_000)
            t0 = time.perf_counter()
            worker.run_pass()
            ingest.append(time.perf_counter() - t0)
        node = NodeConfig(data_dir=data, cache_dir=Path(tmp) / "cold-0", agent_name="bench")  # warm now
        cache = EmbeddingCache(node.cache_dir, backbone, sha)
        before = [load(node, cache, False)[0] for _ in range(args.runs)]
        after = [load(node, cache, True)[0] for _ in range(args.runs)]
        images = load(node, cache, True)[1]
    med = statistics.median
    print(f"machine: {machine()}; Python {platform.python_version()}, {backend()}")
    print(f"{images} photos ({PHOTOS.name} train+test, {sum(f.stat().st_size for f in PHOTOS.rglob('*') if f.is_file()) / 1e6:.1f} MB)")
    print(f"round 1, every photo new:  before {med(cold):6.2f} s  (ClientApp computes every embedding, median of {len(cold)})")
    print(f"                           after  {med(after):6.3f} s  (agent embedded them at ingest: "
          f"{med(ingest):.2f} s moved off the round, timed here un-niced)")
    print(f"each round, cache warm:    before {med(before):6.3f} s  (read + hash + check every file, median of {len(before)})")
    print(f"                           after  {med(after):6.3f} s  (stat each file, load its vector, median of {len(after)})")
    print(f"speed-up of a warm round's loading: {med(before) / med(after):.1f}x")


class _Quiet:
    def __getattr__(self, level):
        return lambda *args, **kwargs: None


if __name__ == "__main__":
    sys.exit(main())
