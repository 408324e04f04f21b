"""On-device inference of every image the inbox files, on its own thread.

Why a thread: the inbox runs on the agent's main loop, which feeds the systemd watchdog; a
burst of photos (a camera coming back online) classified there would stall it. So the inbox
only hands over each image once it is safely filed (its path, SHA-256 and human label), and
this worker classifies it with the running model, appends a line to predictions.jsonl, logs
it, counts it for the heartbeat's field summary and offers it to the label's hook; an image
without a human label (inbox/unlabeled/) is then pseudo-labeled or sent to review by the
pseudo-labeler (pseudo_labels.py). An image that cannot be classified is logged and counted
(`errors`), never raised; an image filed while no model runs is not classified (an unlabeled
one is handed over again when a model runs). At most `max_waiting` images wait: beyond that
an image is still filed (and trained on), only not classified, with a warning; an image
already waiting is not queued twice.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .classifier import RunningClassifier
from .field import FieldTally
from .hooks import LabelHooks
from .model_store import models_root
from .predictions import PREDICTIONS_FILE, PredictionLog
from .pseudo_labels import PseudoLabeler
from .threads import ContextThread

MAX_WAITING = 10_000  # paths and hashes only: about 3 MB


@dataclass(frozen=True)
class FiledImage:
    path: Path
    sha256: str
    human_label: Optional[str]  # the inbox folder's label (None: it came in unlabeled)


class FieldInference(ContextThread):
    def __init__(self, classifier: RunningClassifier, predictions: PredictionLog, tally: FieldTally,
                 hooks: LabelHooks, log, max_waiting: int = MAX_WAITING,
                 labeler: Optional[PseudoLabeler] = None) -> None:
        super().__init__(name="inference")
        self.classifier, self.predictions, self.tally, self.hooks, self.log = (
            classifier, predictions, tally, hooks, log)
        self.labeler = labeler
        self.queue: queue.Queue = queue.Queue(maxsize=max_waiting)
        self.classified = self.errors = self.dropped = 0
        self._waiting: set[str] = set()  # sha256 of the images in the queue
        self._waiting_lock = threading.Lock()

    def submit(self, image: FiledImage, unless_waiting: bool = False) -> None:
        """From the inbox's thread: never blocks. `unless_waiting`: an image classified again
        (after a model change) is not queued when it is waiting already."""
        with self._waiting_lock:
            if unless_waiting and image.sha256 in self._waiting:
                return
            self._waiting.add(image.sha256)
        try:
            self.queue.put_nowait(image)
        except queue.Full:
            with self._waiting_lock:
                self._waiting.discard(image.sha256)
            self.dropped += 1
            self.log.warning("prediction_dropped", file=str(image.path), waiting=self.queue.qsize(),
                             dropped=self.dropped)

    def start(self) -> None:
        self.hooks.start()
        super().start()

    def work(self) -> None:
        while not self.stop_event.is_set():
            try:
                image = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self.classify(image)
            except Exception as exc:  # noqa: BLE001 - the worker must live; the image stays filed
                self._failed(image, exc)
            finally:
                with self._waiting_lock:
                    self._waiting.discard(image.sha256)
                self.queue.task_done()

    def classify(self, image: FiledImage) -> None:
        try:
            prediction = self.classifier.classify_file(image.path)
        except (OSError, ValueError) as exc:  # unreadable file, a model that fails to load or answer
            self._failed(image, exc)
            return
        if prediction is None:
            return  # no model runs yet
        self.classified += 1
        self.predictions.append({
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "sha256": image.sha256,
            "path": str(image.path), "label": prediction.label, "confidence": prediction.confidence,
            "scores": prediction.scores, "model_version": prediction.model_version,
            "human_label": image.human_label})
        self.log.info("image_predicted", model_version=prediction.model_version, label=prediction.label,
                      confidence=prediction.confidence, human_label=image.human_label, sha256=image.sha256)
        self.tally.add(prediction, image.human_label)
        self.hooks.offer(prediction, image.path)
        if image.human_label is None and self.labeler is not None:
            self.labeler.decide(image.sha256, prediction)

    def _failed(self, image: FiledImage, exc: Exception) -> None:
        self.errors += 1
        self.log.error("prediction_failed", file=str(image.path), error=f"{type(exc).__name__}: {exc}"[:300],
                       errors=self.errors)

    def healthy(self) -> bool:
        return self.is_alive() and self.hooks.is_alive()

    def stop(self) -> None:
        super().stop()
        self.hooks.stop()


def field_inference(cfg, classifier: RunningClassifier, log,
                    labeler: Optional[PseudoLabeler] = None) -> Optional[FieldInference]:
    """The worker for this agent's config (None when `inference.enabled` is false)."""
    section = cfg.inference
    if not section.enabled:
        return None
    predictions = PredictionLog(cfg.layout.state_dir / PREDICTIONS_FILE, section.predictions_max_bytes,
                                section.predictions_keep, log)
    return FieldInference(classifier, predictions, FieldTally(section.low_confidence),
                          LabelHooks(section.on_label, log), log, labeler=labeler)


def running_classifier(cfg, log=None) -> RunningClassifier:
    """The model under this agent's models/current (`log`: where the runtime's own output goes)."""
    return RunningClassifier(models_root(cfg.layout.state_dir), log)
