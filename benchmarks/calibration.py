"""Does the champion's confidence mean something? ECE and the confidence histogram before and
after its temperature scaling, on photos neither training nor the fit saw.

For each exported file (int8, what a Pi runs by default, and float32) it prints the
temperature fitted at registration (on the server folder's calibration part), the expected
calibration error before and after on the gate's part of the server folder (the honest
figure the registry records), how many photos score >= 0.99 before and after, and a
confidence histogram. The client test folders (dataset_client*/test: labeled photos the
harness champion never trained on, about 3x the gate's part) are judged the same way as a
larger check, with the temperature they would have given themselves for reference.

Without --model it trains and registers a champion per seed the way a campaign does
(tests/champion_harness.py; coordinator venv, about a minute each) and prints each seed's
figures, then the medians over the seeds:

    .venv/bin/python benchmarks/calibration.py --seeds 0 1 2
    .venv/bin/python benchmarks/calibration.py --model build/demo/state/models/v0001
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FED_SHARED", REPO.parent / "shared"))
PHOTOS = SHARED / "datasets"
SERVER_TEST = PHOTOS / "dataset_server" / "test"
CLIENT_TESTS = (PHOTOS / "dataset_client1" / "test", PHOTOS / "dataset_client2" / "test")
KINDS = {"int8": "model_int8.tflite", "float32": "model_float32.tflite"}
EDGES = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0001)


def histogram(confidence: np.ndarray) -> str:
    counts = np.histogram(confidence, bins=EDGES)[0]
    return " ".join(f"[{lo:.2f},{min(hi, 1):.2f}{']' if hi > 1 else ')'}:{n}"
                    for lo, hi, n in zip(EDGES, EDGES[1:], counts))


def judge(probs: np.ndarray, truth: np.ndarray, temperature: float, floor: float) -> dict:
    from fedapp.calibration import calibrated, ece_bins, expected_calibration_error

    after = calibrated(probs, temperature, floor)
    bins = ece_bins(len(truth))
    return {"images": len(truth), "bins": bins, "accuracy": float((probs.argmax(1) == truth).mean()),
            "ece_before": expected_calibration_error(probs, truth, bins),
            "ece_after": expected_calibration_error(after, truth, bins),
            "sure_before": int((probs.max(1) >= 0.99).sum()), "sure_after": int((after.max(1) >= 0.99).sum()),
            "hist_before": histogram(probs.max(1)), "hist_after": histogram(after.max(1))}


def measure(model_dir: Path) -> dict:
    """Per kind: the registered temperature and the figures on the gate's part and the clients'."""
    from fedapp.calibration import fit_temperature
    from fedapp.images import scan_folder

    from fed_coordinator.models.server_folder import model_outputs, split_server_folder

    meta = json.loads((model_dir / "metadata.json").read_text())
    labels, section = meta["labels"], meta.get("calibration") or {}
    if section.get("method") != "temperature":
        sys.exit(f"{model_dir}: no calibration in its metadata ({section.get('reason', 'registered before it')})")
    gate = split_server_folder(SERVER_TEST, labels).gate
    clients = [f for folder in CLIENT_TESTS for f in scan_folder(folder, labels).files]
    out = {}
    for kind, name in KINDS.items():
        fitted = section[kind]
        t, floor = fitted["temperature"], fitted["probability_floor"]
        row = {"temperature": t}
        for part, files in (("gate", gate), ("clients", clients)):
            probs, truth = model_outputs(model_dir / name, files), np.array([f.label for f in files])
            row[part] = judge(probs, truth, t, floor)
            if part == "clients":
                row[part]["own_temperature"] = fit_temperature(probs, truth, floor)
        out[kind] = row
    return out


def report(seed, figures: dict) -> None:
    for kind, row in figures.items():
        print(f"seed {seed} {kind}: T={row['temperature']:.4f}")
        for part, f in (("gate's part", row["gate"]), ("client tests", row["clients"])):
            own = f" (their own T would be {f['own_temperature']:.3f})" if "own_temperature" in f else ""
            print(f"  {part}: {f['images']} photos, accuracy {f['accuracy']:.3f}, ECE ({f['bins']} bins) "
                  f"{f['ece_before']:.4f} -> {f['ece_after']:.4f}; >= 0.99: {f['sure_before']} -> "
                  f"{f['sure_after']}{own}")
            print(f"    before {f['hist_before']}\n    after  {f['hist_after']}")


def medians(runs: list[dict]) -> None:
    print(f"medians over {len(runs)} champion(s):")
    for kind in KINDS:
        t = statistics.median(r[kind]["temperature"] for r in runs)
        line = f"  {kind}: T={t:.4f}"
        for part in ("gate", "clients"):
            med = {key: statistics.median(r[kind][part][key] for r in runs)
                   for key in ("ece_before", "ece_after", "sure_before", "sure_after")}
            line += (f"; {part} ECE {med['ece_before']:.4f} -> {med['ece_after']:.4f}, "
                     f">= 0.99 {med['sure_before']:g} -> {med['sure_after']:g} of {runs[0][kind][part]['images']}")
        print(line)


def champion_figures(seed: int, work: Path) -> dict:
    sys.path.insert(0, str(REPO / "tests"))
    from champion_harness import build_champion

    from fed_coordinator.models.artifacts import export_agent_artifacts

    weights = SHARED / "models" / "mobilenet_v2_1.00_160_no_top.weights.h5"
    artifacts = export_agent_artifacts(str(weights), 2, work / "exports")
    registry, version = build_champion(work / f"seed{seed}", artifacts, seed=seed)
    return measure(registry.path(version))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a registered version folder (default: train champions)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    if args.model:
        report("-", measure(args.model))
        return
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            runs.append(champion_figures(seed, Path(tmp)))
            report(seed, runs[-1])
    medians(runs)


if __name__ == "__main__":
    main()
