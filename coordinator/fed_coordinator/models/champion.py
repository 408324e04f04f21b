"""The champion gate: a new model ships only if it beats the current one on the server test set.

Both models are scored now, on today's server test folder, with their registered TFLite
float32 files (the artifact that ships), so a changed test set never compares apples to pears.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fed_coordinator.models.registry import ModelRegistry


@dataclass
class GateDecision:
    promoted: bool
    new_score: float
    champion_version: int | None
    champion_score: float | None
    reason: str


def score_model(folder: Path, test_dir: Path, labels: list[str]) -> float:
    """Accuracy of the registered float32 TFLite model on test_dir/<label>/*."""
    from fedapp.images import decode_image, scan_folder
    from fedapp.tflite import load_interpreter

    scan = scan_folder(test_dir, labels)
    if not scan.files:
        raise ValueError(f"no usable images in {test_dir}")
    interp = load_interpreter(folder / "model_float32.tflite")
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    correct = 0
    for item in scan.files:
        interp.set_tensor(inp["index"], decode_image(item.data)[None])
        interp.invoke()
        correct += int(np.argmax(interp.get_tensor(out["index"])[0]) == item.label)
    return correct / len(scan.files)


def gate(registry: ModelRegistry, new_version: int, champion: int | None, test_dir: Path,
         labels: list[str], margin: float) -> GateDecision:
    new_score = score_model(registry.path(new_version), test_dir, labels)
    if champion is None:
        return GateDecision(True, new_score, None, None, "first model: no champion yet")
    champ_score = score_model(registry.path(champion), test_dir, labels)
    # "beats": strictly better, and by at least the margin (a tie never replaces the champion)
    if new_score > champ_score and new_score >= champ_score + margin:
        return GateDecision(True, new_score, champion, champ_score,
                            f"accuracy {new_score:.4f} beats champion v{champion} "
                            f"({champ_score:.4f}) by the margin {margin:.4f}")
    return GateDecision(False, new_score, champion, champ_score,
                        f"accuracy {new_score:.4f} does not beat champion v{champion} "
                        f"({champ_score:.4f}) by the margin {margin:.4f}")
