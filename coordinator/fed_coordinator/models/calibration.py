"""A new model's calibration: measured and fitted on the server's calibration part, at registration.

Why: the champion answers ~1.000 for nearly every photo, so a confidence threshold (low
confidence in the field summary, pseudo-labels) means little unless 0.9 means right about
nine times in ten. Each exported TFLite file (float32 and int8) gets its own temperature,
fitted on its own outputs for the calibration part of the server folder
(models.server_folder), because the int8 file's quantized softmax answers differently
(0.996 and 0.0 where float32 says 0.99998 and 2e-5). The figures recorded in the
registry's metadata are expected calibration errors before and after, on the calibration
part (what the fit saw) and on the gate's part (the honest figure: photos neither training
nor the fit saw). The signed manifest carries the temperature to every Pi
(models.manifest), which applies it to each answer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fedapp.calibration import calibrated, ece_bins, expected_calibration_error, fit_temperature

from fed_coordinator.models.server_folder import model_outputs, split_server_folder

# What an output of 0 counts as before its logarithm: half the int8 softmax's step of 1/256
# (0 means "below that"); for float32, far below anything but an underflow.
PROBABILITY_FLOOR = {"float32": 1e-12, "int8": 1 / 512}
MODEL_FILES = {"float32": "model_float32.tflite", "int8": "model_int8.tflite"}
FIT = ("temperature T minimising the calibration part's negative log-likelihood of "
       "softmax(log(max(p, floor)) / T), with a N(0, 1) prior on log T, T in [0.05, 20]")


def _figures(probs: np.ndarray, labels: np.ndarray, bins: int) -> dict:
    return {"ece": round(expected_calibration_error(probs, labels, bins), 6),
            "mean_confidence": round(float(probs.max(axis=1).mean()), 6)}


def calibrate_file(model_file: Path, kind: str, calibration: list, gate: list) -> dict:
    """Fit one exported file's temperature; its ECE before and after on both parts."""
    floor = PROBABILITY_FLOOR[kind]
    parts = {"calibration": calibration, "gate": gate}
    raw = {name: model_outputs(model_file, files) for name, files in parts.items()}
    truth = {name: np.array([f.label for f in files]) for name, files in parts.items()}
    if not all(np.isfinite(out).all() for out in raw.values()):
        return {"temperature": None, "reason": "outputs are not finite: nothing to calibrate"}
    temperature = round(fit_temperature(raw["calibration"], truth["calibration"], floor), 4)
    figures = {}
    for name in parts:
        bins = ece_bins(len(truth[name]))
        after = calibrated(raw[name], temperature, floor)
        figures[name] = {"images": len(truth[name]), "ece_bins": bins,
                         "accuracy": round(float((raw[name].argmax(1) == truth[name]).mean()), 6),
                         "before": _figures(raw[name], truth[name], bins),
                         "after": _figures(after, truth[name], bins)}
    return {"temperature": temperature, "probability_floor": floor, **figures}


def calibration_section(folder: Path, test_dir: Path, labels: list[str], log=None) -> dict:
    """The registry metadata's `calibration` for the model files in `folder`.

    {"method": "none", "reason": ...} when the server folder is too small to keep a
    calibration part apart from the gate's (logged as a warning)."""
    split = split_server_folder(test_dir, labels)
    if split.skipped:
        if log is not None:
            log.warning("calibration_skipped", reason=split.skipped, test_dir=str(test_dir))
        return {"method": "none", "reason": split.skipped, "split": split.summary()}
    kinds = {kind: calibrate_file(Path(folder) / name, kind, split.calibration, split.gate)
             for kind, name in MODEL_FILES.items()}
    if log is not None:
        for kind, fitted in kinds.items():
            log.info("model_calibrated", kind=kind, temperature=fitted["temperature"],
                     gate_ece_before=fitted.get("gate", {}).get("before", {}).get("ece"),
                     gate_ece_after=fitted.get("gate", {}).get("after", {}).get("ece"),
                     calibration_images=len(split.calibration), gate_images=len(split.gate))
    return {"method": "temperature", "fit": FIT, "split": split.summary(), **kinds}


def manifest_calibration(metadata: dict, kind: str) -> dict | None:
    """The manifest's `calibration` for one file kind of a registered version (None: none
    was fitted, e.g. a model registered before calibration existed)."""
    section = metadata.get("calibration") or {}
    fitted = section.get(kind) or {}
    if section.get("method") != "temperature" or fitted.get("temperature") is None:
        return None
    return {"method": "temperature", "temperature": fitted["temperature"],
            "probability_floor": fitted["probability_floor"]}
