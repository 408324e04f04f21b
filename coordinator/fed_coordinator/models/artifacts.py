"""Per-campaign exports: the TFLite backbone and head trainer agents need, and the final model.

Exports are cached by (weights file hash, label count, trainer format), so a nightly campaign
with an unchanged backbone reuses yesterday's bytes and agents keep their cached copies too;
a new trainer format (TRAINER_FORMAT) is exported once, and shipped to each agent once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fed_common.files import sha256_file


TRAINER_FORMAT = 2  # 2: the train signature takes a sample_weight per example


def _weights_key(weights: str) -> str:
    return "imagenet" if weights == "imagenet" else sha256_file(Path(weights))[:16]


def export_agent_artifacts(weights: str, num_classes: int, cache_root: Path) -> Path:
    """Return a folder with backbone.tflite and trainer.tflite, exporting them if needed."""
    key = f"{_weights_key(weights)}-c{num_classes}-t{TRAINER_FORMAT}"
    target = cache_root / key
    if (target / "backbone.tflite").is_file() and (target / "trainer.tflite").is_file():
        return target
    from fed_coordinator.models.head_trainer import export_head_trainer
    from fed_coordinator.models.keras_model import EMBEDDING_DIM, HIDDEN_UNITS, build_backbone, to_tflite_float32

    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_root, prefix=".export-"))
    try:
        (tmp / "backbone.tflite").write_bytes(to_tflite_float32(build_backbone(weights)))
        export_head_trainer(tmp / "trainer.tflite", EMBEDDING_DIM, HIDDEN_UNITS, num_classes)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_head(npz_path: Path) -> list[np.ndarray]:
    with np.load(npz_path) as data:
        return [data[name] for name in ("w0", "b0", "w1", "b1")]


def build_final_model(folder: Path, weights: str, head: list[np.ndarray], labels: list[str],
                      calibration_images: list[np.ndarray], server_test_dir: Path | None = None,
                      log=None) -> dict:
    """Write model.keras, model_float32.tflite and model_int8.tflite into folder.

    `calibration_images` are the int8 quantization's representative samples. With
    `server_test_dir`, each TFLite file also gets its temperature scaling, fitted on that
    folder's calibration part (models.calibration), in the returned `calibration` field."""
    from fed_coordinator.models.keras_model import build_backbone, build_classifier, to_tflite_float32, to_tflite_int8

    model = build_classifier(build_backbone(weights), head, len(labels))
    model.save(folder / "model.keras")
    (folder / "model_float32.tflite").write_bytes(to_tflite_float32(model))
    (folder / "model_int8.tflite").write_bytes(to_tflite_int8(model, calibration_images))
    fields = {"labels": labels, "input": "RGB pixels 0-255, 160x160, float32",
              "output": "probabilities in label order"}
    if server_test_dir is not None:
        from fed_coordinator.models.calibration import calibration_section

        fields["calibration"] = calibration_section(folder, Path(server_test_dir), labels, log)
    return fields
