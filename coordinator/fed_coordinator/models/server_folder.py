"""The server's labeled photos in two parts: one calibrates a new model, the other judges it.

Why apart: a model's calibration is fitted on labeled photos it was not trained on, and the
champion gate must then score it on photos the calibration did not see, or the gate's
figures (and the ECE reported on the gate's part) would flatter it. The split is by
content, not by name or order: per label, the CALIBRATION_FRACTION of distinct images with
the smallest SHA-256 calibrate, the rest are the gate's. So the same folder always splits
the same way, a copy of a photo under another name lands on the same side, and adding
photos moves at most the images at the boundary. A label with too few images for
MIN_PER_LABEL on each side means no calibration at all: the gate keeps the whole folder
(and the reason says so) rather than scoring on calibration images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CALIBRATION_FRACTION = 0.3
MIN_PER_LABEL = 3  # on each side, per label
RULE = (f"per label, the {CALIBRATION_FRACTION:.0%} of distinct images with the smallest SHA-256 "
        f"calibrate (at least {MIN_PER_LABEL} per label on each side), the rest are the gate's")


@dataclass(frozen=True)
class ServerSplit:
    calibration: list  # fedapp.images.LabeledFile
    gate: list
    skipped: str | None = None  # why there is no calibration part (None: there is one)

    def summary(self) -> dict:
        return {"rule": RULE, "calibration_images": len(self.calibration),
                "gate_images": len(self.gate), "skipped": self.skipped}


def _label_split(files: list, label: str) -> tuple[list, list, str | None]:
    """(calibration, gate, why not) for one label's files."""
    digests = sorted({f.digest for f in files})
    take = int(CALIBRATION_FRACTION * len(digests) + 0.5)
    if take < MIN_PER_LABEL or len(digests) - take < MIN_PER_LABEL:
        return [], files, (f"label '{label}' has {len(digests)} distinct images, fewer than the "
                           f"{2 * MIN_PER_LABEL} a calibration part and the gate's part need")
    chosen = set(digests[:take])
    return ([f for f in files if f.digest in chosen], [f for f in files if f.digest not in chosen], None)


def split_server_folder(test_dir: str | Path, labels: list[str]) -> ServerSplit:
    """The calibration part and the gate's part of test_dir/<label>/*."""
    from fedapp.images import scan_folder

    files = scan_folder(test_dir, labels).files
    calibration, gate = [], []
    for index, label in enumerate(labels):
        part_cal, part_gate, why = _label_split([f for f in files if f.label == index], label)
        if why:
            return ServerSplit([], files, f"no calibration part: {why}")
        calibration += part_cal
        gate += part_gate
    return ServerSplit(calibration, gate)


def model_outputs(model_file: Path, files: list) -> np.ndarray:
    """The TFLite model's raw output for each file, one row per file (the shipped artifact)."""
    from fedapp.images import decode_image
    from fedapp.tflite import load_interpreter

    interp = load_interpreter(model_file)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    rows = []
    for item in files:
        interp.set_tensor(inp["index"], decode_image(item.data)[None])
        interp.invoke()
        rows.append(np.array(interp.get_tensor(out["index"])[0], np.float64))
    return np.array(rows)
