"""The model this Pi runs, as one object: the TFLite interpreter for ``models/current``.

Why one class: the daemon's inference of every filed image, `fed-agent predict` and the
model store's self-test all classify images, and they must never differ in how: the same
decoding as training and the coordinator's Keras model (fedapp.images), the same input
check against the signed manifest, the labels in the manifest's output order.

`ModelClassifier` is one model file; `RunningClassifier` follows the ``current`` link: it
loads the model on first use and again whenever ``current`` points at another version (the
model updater switched), so no caller holds on to a model that is no longer running. A
TFLite interpreter is not thread-safe (the inference worker and the updater's self-test use
the running model at the same time), so each inference holds the model's lock. A
manifest's calibration (a temperature) is applied to every answer `classify` gives; `scores`
stays the file's raw output (what the smoke test checks).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
from fed_common.manifest import ManifestRejected, ModelManifest, SignedManifest
from fedapp.calibration import calibrated
from fedapp.images import decode_image

from .model_store import MANIFEST_FILE, MODEL_FILE

SMOKE_PIXEL = 127.5  # mid-grey: any sane model answers it with finite scores
_STDERR_REDIRECT = threading.Lock()


@dataclass(frozen=True)
class Prediction:
    """What a model said of one image: its best label and score, and every label's score."""

    label: str
    confidence: float
    scores: dict[str, float]
    model_version: int


class ModelClassifier:
    """One model file with the labels and the input its manifest names.

    ManifestRejected if the file does not load or takes another input than the manifest
    says: the same words whether a candidate is being self-tested or the running model
    is being loaded again."""

    def __init__(self, model_path: str | Path, manifest: ModelManifest, log=None) -> None:
        from fedapp.tflite import load_interpreter

        self.manifest, self.path = manifest, Path(model_path)
        try:
            with _native_stderr_logged(log):
                self._interpreter = load_interpreter(str(model_path))
                self._interpreter.allocate_tensors()
        except Exception as exc:  # the interpreter raises ValueError/RuntimeError for a bad file
            raise ManifestRejected(f"model does not load or run: {exc}") from None
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        spec = manifest.input
        self.input_shape = [1, spec.height, spec.width, spec.channels]
        if list(self._input["shape"]) != self.input_shape:
            raise ManifestRejected(f"model input is {list(self._input['shape'])}, the manifest says "
                                   f"{self.input_shape}")
        self._lock = threading.Lock()

    @property
    def version(self) -> int:
        return self.manifest.version

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """The raw output for one decoded image (height x width x 3, float32 0..255)."""
        batch = np.asarray(pixels, np.float32).reshape(self.input_shape)
        with self._lock:
            self._interpreter.set_tensor(self._input["index"], batch)
            self._interpreter.invoke()
            return np.array(self._interpreter.get_tensor(self._output["index"])).reshape(-1)

    def smoke(self) -> None:
        """One inference on a grey image; ManifestRejected unless it answers one finite score
        per label (a model for other labels, or one that outputs NaN, never runs)."""
        try:
            output = self.scores(np.full(self.input_shape, SMOKE_PIXEL, np.float32))
        except Exception as exc:  # noqa: BLE001 - whatever the interpreter raises, it is refused
            raise ManifestRejected(f"model does not load or run: {exc}") from None
        finite = bool(np.isfinite(output).all())
        if output.shape[-1] != len(self.manifest.labels) or not finite:
            raise ManifestRejected(f"model answers {output.shape[-1]} values (finite: {finite}) "
                                   f"for {len(self.manifest.labels)} labels")

    def classify(self, pixels: np.ndarray) -> Prediction:
        """The model's answer, calibrated with the manifest's temperature when it has one, so
        every confidence the Pi reports (predictions.jsonl, the field summary, `fed-agent
        predict`) is the calibrated one; the best label is the same either way."""
        scores = self.scores(pixels)
        labels = self.manifest.labels
        if scores.shape[-1] != len(labels) or not np.isfinite(scores).all():
            raise ValueError(f"model v{self.version} answered {scores.tolist()} for {len(labels)} labels")
        calibration = self.manifest.calibration
        if calibration is not None:
            scores = calibrated(scores, calibration.temperature, calibration.probability_floor)
        best = int(np.argmax(scores))
        return Prediction(label=labels[best], confidence=round(float(scores[best]), 4),
                          scores={label: round(float(s), 4) for label, s in zip(labels, scores)},
                          model_version=self.version)

    def classify_file(self, path: str | Path) -> Prediction:
        """OSError or ValueError (naming the file) when the image cannot be read."""
        return self.classify(decode_image(Path(path).read_bytes(), str(path)))


class RunningClassifier:
    """Whatever model ``<models>/current`` points at, loaded when first needed or changed."""

    def __init__(self, models_root: str | Path, log=None) -> None:
        self.root, self.log = Path(models_root), log
        self._lock = threading.Lock()
        self._key: Optional[tuple] = None
        self._model: Optional[ModelClassifier] = None

    def _current(self) -> Optional[tuple[Path, tuple]]:
        """The version folder ``current`` names, and what identifies its model file."""
        try:
            folder = self.root / os.readlink(self.root / "current")
            st = os.stat(folder / MODEL_FILE)
        except FileNotFoundError:
            return None
        return folder, (folder.name, st.st_ino, st.st_size, st.st_mtime_ns)

    def manifest(self) -> Optional[ModelManifest]:
        """The running model's manifest, without loading the model (None: no model runs)."""
        current = self._current()
        if current is None:
            return None
        try:
            return _read_manifest(current[0])
        except (OSError, ValueError):
            return None

    def model(self) -> Optional[ModelClassifier]:
        """The running model, (re)loaded if ``current`` changed since the last call."""
        current = self._current()
        if current is None:
            return None
        folder, key = current
        with self._lock:
            if key != self._key:
                # Read from the folder, not through `current`: the link may switch meanwhile,
                # and the labels must be those of the file loaded.
                self._model = ModelClassifier(folder / MODEL_FILE, _read_manifest(folder), self.log)
                self._key = key
            return self._model

    def classify_file(self, path: str | Path) -> Optional[Prediction]:
        """The running model's answer for an image file (None when no model runs)."""
        model = self.model()
        return model.classify_file(path) if model is not None else None


def _read_manifest(folder: Path) -> ModelManifest:
    return SignedManifest.model_validate_json((folder / MANIFEST_FILE).read_bytes()).manifest


@contextlib.contextmanager
def _native_stderr_logged(log) -> Iterator[None]:
    """What the TFLite runtime's C++ code prints on file descriptor 2 while a model loads
    ("INFO: Created TensorFlow Lite XNNPACK delegate for CPU."), logged with `log` as JSON
    lines, so the daemon's output stays one JSON object a line (whatever another thread
    writes to stderr meanwhile is logged the same way, never lost). No log (a command such
    as `fed-agent predict`): it goes back to stderr as it was."""
    if log is None:
        yield
        return
    # One redirect at a time: two model loads at once (the updater's self-test, the inference
    # worker's reload) would otherwise restore each other's descriptor and lose stderr.
    with _STDERR_REDIRECT, tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read(64 * 1024).decode(errors="replace").splitlines():
                if line.strip():
                    log.info("tflite_runtime_output", line=line.strip()[:500])
