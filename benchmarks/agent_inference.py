"""What classifying with the champion costs a Pi: agent RSS with the model loaded vs idle, and
time per image (target: +30 MB or less over the idle agent).

Each run is a fresh process in the agent venv (tflite-runtime, never TensorFlow) that imports
what the `fed-agent run` daemon imports and reads its RSS (idle), then loads the model
(fed_agent.classifier's ModelClassifier where the agent has it, else the interpreter from
`fedapp.tflite.load_interpreter` as `fed-agent predict` used it; default threads) and
classifies the photos, each decoded with `fedapp.images.decode_image` (each file is read
before its clock starts, so disk is not timed). Figures per kind (int8, float32) are medians
over the runs; within a run, per-image time is the median over the photos.

Without --model it first trains and registers a champion the way a campaign does
(tests/champion_harness.py; coordinator venv, about 20 s):

    .venv/bin/python benchmarks/agent_inference.py --runs 5
    .venv/bin/python benchmarks/agent_inference.py --model build/demo/state/models/v0001
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

REPO = Path(__file__).resolve().parents[1]
AGENT_PYTHON = REPO / ".venv-agent" / "bin" / "python"
PHOTOS = Path(os.environ.get("FED_SHARED", REPO.parent / "shared")) / "datasets"
PHOTO_FOLDERS = ("dataset_server/test", "dataset_client1/test", "dataset_client2/test")
KINDS = {"int8": "model_int8.tflite", "float32": "model_float32.tflite"}
MB = 1024 * 1024
# What `fed-agent run` imports before any model is loaded (fed_agent.cli's daemon path).
DAEMON_IMPORTS = ("fed_common.config", "fed_common.logs", "structlog", "fed_agent.cli", "fed_agent.config",
                  "fed_agent.daemon")


def proc_status(field: str) -> int:
    """VmRSS / VmHWM of this process, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def runtime() -> str:
    """Which TFLite runtime this process loaded (fedapp.tflite picks it)."""
    return next((m for m in ("tflite_runtime", "ai_edge_litert", "tensorflow") if m in sys.modules), "?")


def import_inference_libraries() -> None:
    """numpy, Pillow, the TFLite runtime and the agent's classifier: what inference adds to
    the daemon before any model is read (the daemon may already hold some of them)."""
    import importlib

    for name in ("numpy", "PIL.Image", "fedapp.images", "fedapp.tflite", "fed_agent.classifier"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass  # fed_agent.classifier is newer than some agents
    try:
        import tflite_runtime.interpreter  # noqa: F401
    except ImportError:
        import ai_edge_litert.interpreter  # noqa: F401


def load_model(model: str, labels: list[str]):
    """(scores(pixels), what runs it): the agent's ModelClassifier where fed_agent has one (the
    class the daemon and `fed-agent predict` classify with), else the bare interpreter."""
    try:
        from fed_agent.classifier import ModelClassifier
    except ImportError:
        ModelClassifier = None
    if ModelClassifier is not None:
        from fed_common.files import sha256_file
        from fed_common.manifest import ModelFile, ModelManifest

        kind = "int8" if "int8" in Path(model).name else "float32"
        manifest = ModelManifest(version=1, labels=labels, created_at=0.0, file=ModelFile(
            name=Path(model).name, kind=kind, size=Path(model).stat().st_size, sha256=sha256_file(Path(model))))
        return ModelClassifier(model, manifest).scores, f"fed_agent.classifier.ModelClassifier on {runtime()}"
    import numpy as np
    from fedapp.tflite import load_interpreter

    interpreter = load_interpreter(model)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]

    def scores(pixels):
        interpreter.set_tensor(inp["index"], pixels[None].astype(np.float32))
        interpreter.invoke()
        return interpreter.get_tensor(out["index"])[0]

    return scores, f"{runtime()} interpreter"


def child(model: str, images: list[str], labels: list[str]) -> dict:
    """One run, in the agent venv: RSS idle, after loading, after classifying; times per image."""
    import importlib

    for name in DAEMON_IMPORTS:
        importlib.import_module(name)
    idle = proc_status("VmRSS")
    import numpy as np
    from fedapp.images import decode_image

    import_inference_libraries()
    libraries = proc_status("VmRSS")
    scores, what_runs = load_model(model, labels)
    loaded = proc_status("VmRSS")
    total, invoke_only, answers = [], [], []
    for name in images:
        blob = Path(name).read_bytes()
        t0 = time.perf_counter()
        pixels = decode_image(blob, name)
        t1 = time.perf_counter()
        answers.append(int(np.argmax(scores(pixels))))
        t2 = time.perf_counter()
        total.append(t2 - t0)
        invoke_only.append(t2 - t1)
    return {"idle": idle, "libraries": libraries, "loaded": loaded, "classified": proc_status("VmRSS"), "hwm": proc_status("VmHWM"),
            "total_ms": 1000 * statistics.median(total), "invoke_ms": 1000 * statistics.median(invoke_only),
            "first_ms": 1000 * total[0], "answers": answers, "runtime": what_runs,
            "python": platform.python_version()}


def run_child(model: Path, images: list[str], labels: list[str]) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json") as listing:
        json.dump({"images": images, "labels": labels}, listing)
        listing.flush()
        proc = subprocess.run([str(AGENT_PYTHON), __file__, "--child", str(model), listing.name],
                              capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"child run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_files(model: Path | None, work: Path) -> dict[str, Path]:
    """{kind: file}: a registered version folder, one .tflite file, or a fresh champion."""
    if model is None:
        model = build_champion(work)
    if model.is_file():
        return {model.name: model}
    found = {kind: model / name for kind, name in KINDS.items() if (model / name).is_file()}
    if not found:
        raise SystemExit(f"{model}: no {' or '.join(KINDS.values())} in it")
    return found


def model_labels(model: Path) -> list[str]:
    """Labels in output order from the registry's metadata.json beside the file, if any."""
    meta = model.parent / "metadata.json"
    return json.loads(meta.read_text())["labels"] if meta.is_file() else ["head", "hardhat"]


def build_champion(work: Path) -> Path:
    """Train and register a champion like a campaign (needs the coordinator venv)."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from champion_harness import build_champion as build
        from conftest import WEIGHTS
        from fed_coordinator.models.artifacts import export_agent_artifacts
    except ImportError as exc:
        raise SystemExit(f"building a champion needs the coordinator venv ({exc}); or pass --model") from None
    artifacts = export_agent_artifacts(str(WEIGHTS), 2, work / "exports")
    registry, version = build(work, artifacts)
    return registry.path(version)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "unknown cpu")
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), load average {load}"


def report(results: dict[str, list[dict]], files: dict[str, Path], n_images: int) -> None:
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    all_runs = list(results.values())
    first = all_runs[0][0]
    print(f"machine: {machine()}; agent venv Python {first['python']}; "
          f"classified with {first['runtime']}")
    print(f"{n_images} photos from {', '.join(PHOTO_FOLDERS)}; median of {len(all_runs[0])} runs, "
          "each a fresh process")
    head = (f"{'model':<22}{'file MB':>8}{'idle RSS':>10}{'+libs':>8}{'+loaded':>9}{'+classified':>12}{'HWM':>8}"
            f"{'ms/img decode+invoke':>22}{'ms/img invoke':>15}{'first img ms':>14}")
    print(head)
    print("-" * len(head))
    for kind, runs in results.items():
        idle = med(runs, "idle")
        print(f"{kind:<22}{files[kind].stat().st_size / MB:>8.1f}{idle / MB:>9.1f}M"
              f"{(med(runs, 'libraries') - idle) / MB:>+7.1f}M{(med(runs, 'loaded') - idle) / MB:>+8.1f}M{(med(runs, 'classified') - idle) / MB:>+11.1f}M"
              f"{med(runs, 'hwm') / MB:>7.1f}M{med(runs, 'total_ms'):>22.1f}{med(runs, 'invoke_ms'):>15.1f}"
              f"{med(runs, 'first_ms'):>14.1f}")
    print("RSS in MB (VmRSS, VmHWM from /proc/self/status). idle: after the imports of fed-agent run; "
          "+libs (numpy, Pillow, TFLite runtime), +loaded (model allocated) and +classified (after every "
          "photo) are over idle, cumulative (target: +30 MB or less)")
    if len(all_runs) == 2:
        same = sum(a == b for a, b in zip(all_runs[0][0]["answers"], all_runs[1][0]["answers"]))
        print(f"{' and '.join(results)} give the same label on {same}/{n_images} photos")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a registered version folder (vNNNN) or one .tflite file")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=0, help="at most this many photos (0: all)")
    args = parser.parse_args()
    if not AGENT_PYTHON.exists():
        raise SystemExit(f"needs the agent venv {AGENT_PYTHON} (make venv)")
    images = [str(p) for folder in PHOTO_FOLDERS for p in sorted((PHOTOS / folder).glob("*/*.jpg"))]
    images = images[:args.images] if args.images else images
    if not images:
        raise SystemExit(f"no photos under {PHOTOS}")
    with tempfile.TemporaryDirectory() as work:
        files = model_files(args.model, Path(work))
        results = {kind: [run_child(path, images, model_labels(path)) for _ in range(args.runs)]
                   for kind, path in files.items()}
        report(results, files, len(images))
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        job = json.loads(Path(sys.argv[3]).read_text())
        print(json.dumps(child(sys.argv[2], job["images"], job["labels"])))
        sys.exit(0)
    sys.exit(main())
