"""The champion gate: a new model ships only if it beats the current one on the server test set.

Both models are scored now, on the gate's part of today's server test folder
(models.server_folder: the rest calibrates new models and is never scored here), with their
registered TFLite float32 files (the artifact that ships), so a changed test set never
compares apples to pears.
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
from fed_coordinator.models.server_folder import model_outputs, split_server_folder


@dataclass
class GateDecision:
    promoted: bool
    new_score: float
    champion_version: int | None
    champion_score: float | None
    reason: str
    images: int = 0  # how many of the server's photos the gate scored on (its part)


@dataclass(frozen=True)
class Score:
    accuracy: float
    non_finite: int      # test images whose output had a NaN or an Inf
    majority_share: float  # accuracy of always answering the commonest label
    images: int


def score_model(folder: Path, files: list, labels: list[str]) -> Score:
    """How the registered float32 TFLite model does on `files` (fedapp.images.LabeledFile)."""
    if not files:
        raise ValueError("no usable images to score the model on")
    outputs = model_outputs(folder / "model_float32.tflite", files)
    finite = np.isfinite(outputs).all(axis=1)
    truth = np.array([item.label for item in files])
    # a non-finite answer is never counted correct, whatever argmax says
    correct = int((finite & (outputs.argmax(axis=1) == truth)).sum())
    counts = np.bincount(truth, minlength=len(labels))
    total = len(files)
    return Score(correct / total, int((~finite).sum()), float(counts.max()) / total, total)


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
    files = split_server_folder(test_dir, labels).gate
    new = score_model(registry.path(new_version), files, labels)
    refused = _floor_failure(new, min_accuracy)
    if refused:
        return GateDecision(False, new.accuracy, champion, None, f"refused: {refused}", new.images)
    if champion is None:
        return GateDecision(True, new.accuracy, None, None,
                            f"first model: accuracy {new.accuracy:.4f} meets champion.min_accuracy "
                            f"{min_accuracy:.4f}", new.images)
    champ_score = score_model(registry.path(champion), files, labels).accuracy
    # "beats": strictly better, and by at least the margin (a tie never replaces the champion)
    if new.accuracy > champ_score and new.accuracy >= champ_score + margin:
        return GateDecision(True, new.accuracy, champion, champ_score,
                            f"accuracy {new.accuracy:.4f} beats champion v{champion} "
                            f"({champ_score:.4f}) by the margin {margin:.4f}", new.images)
    return GateDecision(False, new.accuracy, champion, champ_score,
                        f"accuracy {new.accuracy:.4f} does not beat champion v{champion} "
                        f"({champ_score:.4f}) by the margin {margin:.4f}", new.images)
