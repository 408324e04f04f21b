"""The champion gate: a new model ships only if it beats the current one on the server test set.

Both models are scored now, on today's server test folder, with their registered TFLite
float32 files (the artifact that ships), so a changed test set never compares apples to pears.
A model is refused outright, champion or not, when any of its outputs is not finite (a NaN
head still "scores" the share of class 0, since argmax of NaN is 0), when it scores below
`champion.min_accuracy`, or when it does no better than always answering the test set's
commonest label; the first model of a fleet meets the same floor.
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


@dataclass(frozen=True)
class Score:
    accuracy: float
    non_finite: int      # test images whose output had a NaN or an Inf
    majority_share: float  # accuracy of always answering the commonest label
    images: int


def score_model(folder: Path, test_dir: Path, labels: list[str]) -> Score:
    """How the registered float32 TFLite model does on test_dir/<label>/*."""
    from fedapp.images import decode_image, scan_folder
    from fedapp.tflite import load_interpreter

    scan = scan_folder(test_dir, labels)
    if not scan.files:
        raise ValueError(f"no usable images in {test_dir}")
    interp = load_interpreter(folder / "model_float32.tflite")
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    correct = non_finite = 0
    for item in scan.files:
        interp.set_tensor(inp["index"], decode_image(item.data)[None])
        interp.invoke()
        output = interp.get_tensor(out["index"])[0]
        if not np.isfinite(output).all():
            non_finite += 1
            continue  # never counted correct, whatever argmax says
        correct += int(np.argmax(output) == item.label)
    counts = np.bincount([item.label for item in scan.files], minlength=len(labels))
    total = len(scan.files)
    return Score(correct / total, non_finite, float(counts.max()) / total, total)


def _floor_failure(score: Score, min_accuracy: float) -> str | None:
    """Why a model cannot be champion whatever the current one does, or None."""
    if score.non_finite:
        return f"outputs are not finite (NaN/Inf) on {score.non_finite} of {score.images} test images"
    if score.accuracy < min_accuracy:
        return f"accuracy {score.accuracy:.4f} is below champion.min_accuracy {min_accuracy:.4f}"
    if score.accuracy <= score.majority_share:
        return (f"accuracy {score.accuracy:.4f} is no better than always answering the commonest "
                f"label ({score.majority_share:.4f})")
    return None


def gate(registry: ModelRegistry, new_version: int, champion: int | None, test_dir: Path,
         labels: list[str], margin: float, min_accuracy: float) -> GateDecision:
    new = score_model(registry.path(new_version), test_dir, labels)
    refused = _floor_failure(new, min_accuracy)
    if refused:
        return GateDecision(False, new.accuracy, champion, None, f"refused: {refused}")
    if champion is None:
        return GateDecision(True, new.accuracy, None, None,
                            f"first model: accuracy {new.accuracy:.4f} meets champion.min_accuracy "
                            f"{min_accuracy:.4f}")
    champ_score = score_model(registry.path(champion), test_dir, labels).accuracy
    # "beats": strictly better, and by at least the margin (a tie never replaces the champion)
    if new.accuracy > champ_score and new.accuracy >= champ_score + margin:
        return GateDecision(True, new.accuracy, champion, champ_score,
                            f"accuracy {new.accuracy:.4f} beats champion v{champion} "
                            f"({champ_score:.4f}) by the margin {margin:.4f}")
    return GateDecision(False, new.accuracy, champion, champ_score,
                        f"accuracy {new.accuracy:.4f} does not beat champion v{champion} "
                        f"({champ_score:.4f}) by the margin {margin:.4f}")
