"""The heartbeat's field summary: what the running model saw since the coordinator last
took a heartbeat.

Semantics (what the coordinator may rely on): each heartbeat's `field` is a delta, the
predictions of ONE model version (`model_version`) not yet in a heartbeat the coordinator
accepted (HTTP 2xx). A failed post loses nothing: the counts stay and go again, with any new
ones, in the next heartbeat; once a post is accepted exactly what it carried is taken off
(predictions made while it was in flight stay for the next one). So summing `field` over the
accepted heartbeats of an agent counts every classified image once. When predictions of two
versions are waiting (the model switched in between), the older version's go first and the
newer ones in the following heartbeat. Nothing waiting: a summary of 0 images for the model
running, or no summary at all when no model runs.

Since-start totals (`totals()`) are kept too, for the STATUS line.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from fed_common.heartbeat import FieldSummary

from .classifier import Prediction


@dataclass
class FieldCounts:
    """Counts of one model version's predictions (added to, and taken off when sent)."""

    images: int = 0
    predicted: Counter = field(default_factory=Counter)
    confidence_sum: float = 0.0
    low_confidence_images: int = 0
    labeled: int = 0
    correct: int = 0

    def add(self, prediction: Prediction, human_label: Optional[str], threshold: float) -> None:
        self.images += 1
        self.predicted[prediction.label] += 1
        self.confidence_sum += prediction.confidence
        self.low_confidence_images += prediction.confidence < threshold
        if human_label is not None:
            self.labeled += 1
            self.correct += human_label == prediction.label

    def copy(self) -> "FieldCounts":
        return FieldCounts(self.images, Counter(self.predicted), self.confidence_sum,
                           self.low_confidence_images, self.labeled, self.correct)

    def take_off(self, sent: "FieldCounts") -> None:
        self.images -= sent.images
        self.predicted.subtract(sent.predicted)
        self.predicted = +self.predicted  # drop the labels at zero
        self.confidence_sum = self.confidence_sum - sent.confidence_sum if self.images else 0.0
        self.low_confidence_images -= sent.low_confidence_images
        self.labeled -= sent.labeled
        self.correct -= sent.correct

    def summary(self, version: Optional[int], threshold: float) -> FieldSummary:
        mean = round(min(1.0, max(0.0, self.confidence_sum / self.images)), 4) if self.images else None
        return FieldSummary(model_version=version, images=self.images, predicted=dict(self.predicted),
                            mean_confidence=mean, low_confidence=threshold,
                            low_confidence_images=self.low_confidence_images, labeled=self.labeled,
                            correct=self.correct)


class FieldTally:
    """Thread-safe: the inference worker adds, the heartbeat thread takes summaries."""

    def __init__(self, low_confidence: float) -> None:
        self.threshold = low_confidence
        self._lock = threading.Lock()
        self._waiting: dict[int, FieldCounts] = {}  # version -> counts, oldest version first
        self._offered: Optional[tuple[FieldSummary, int, FieldCounts]] = None
        self._totals = FieldCounts()

    def add(self, prediction: Prediction, human_label: Optional[str]) -> None:
        with self._lock:
            counts = self._waiting.setdefault(prediction.model_version, FieldCounts())
            counts.add(prediction, human_label, self.threshold)
            self._totals.add(prediction, human_label, self.threshold)

    def summary(self, running_version: Optional[int]) -> Optional[FieldSummary]:
        """The summary for the next heartbeat; `accepted` with the same object takes it off."""
        with self._lock:
            if not self._waiting:
                self._offered = None
                return FieldCounts().summary(running_version, self.threshold) if running_version else None
            version, counts = next(iter(self._waiting.items()))
            summary = counts.summary(version, self.threshold)
            self._offered = (summary, version, counts.copy())
            return summary

    def accepted(self, summary: Optional[FieldSummary]) -> None:
        """The coordinator took a heartbeat carrying `summary`: take its counts off. Only the
        summary last handed out counts (an older one's counts are in it too)."""
        with self._lock:
            if summary is None or self._offered is None or self._offered[0] is not summary:
                return
            _, version, sent = self._offered
            self._offered = None
            counts = self._waiting[version]
            counts.take_off(sent)
            if counts.images <= 0:
                del self._waiting[version]

    def totals(self) -> FieldSummary:
        """Everything classified since the agent started (the STATUS line's numbers)."""
        with self._lock:
            return self._totals.summary(None, self.threshold)
