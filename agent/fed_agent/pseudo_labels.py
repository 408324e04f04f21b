"""Pseudo labels: what the running model says of an unlabeled image, kept when it is sure.

Each image the inbox files from ``inbox/unlabeled/`` is classified by the inference worker;
this decides what becomes of it (section ``labeling:``):

* confidence >= ``pseudo_threshold``: a pseudo label (status "pseudo"), with its provenance
  (model version, confidence, time) in the store index. It is training data only as a pseudo
  label: the image stays in ``data/unlabeled/`` and ``ImageStore.entries`` (what the
  ClientApp reads) never returns it;
* otherwise: the review queue (status "review"), with the model's guess and confidence, so a
  review page can show the least sure first, and the reason;
* per-class guard: a class has at most ``max_pseudo_ratio`` x its human labels (train and
  test) as pseudo labels; beyond that the image goes to review ("class cap: ..."), so one
  common class cannot flood the training set ("everything is a deer"). A class with no
  human label has no pseudo label;
* ``enabled: false``: no pseudo labels; every classified image goes to review.

Rollbacks (`follow`, every inbox scan): when the model running is older than the one that
made some pseudo labels, those are withdrawn (StoreWriter.withdraw_pseudo_labels) and their
images classified again by the running model, as is every image still unlabeled (filed
while no model ran, or before a restart) whenever the running version changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from fed_common.store import IndexEntry, StoredPrediction

from .classifier import Prediction
from .store_writer import IndexBusy, StoreWriter, changed, now_iso


@dataclass(frozen=True)
class LabelingPolicy:
    enabled: bool = True
    pseudo_threshold: float = 0.9
    max_pseudo_ratio: float = 1.0


class PseudoLabeler:
    def __init__(self, writer: StoreWriter, policy: LabelingPolicy, log) -> None:
        self.writer, self.policy, self.log = writer, policy, log
        self._version_seen: Optional[int] = None

    def decide(self, sha: str, prediction: Prediction) -> Optional[IndexEntry]:
        """Pseudo label or review item for the unlabeled image `sha`, by the rules above;
        None when it is not unlabeled any more (a person labeled it meanwhile) or the store
        was busy (it stays unlabeled, and is classified again at the next model change)."""
        try:
            with self.writer.editing() as entries:
                entry = entries.get(sha)
                if entry is None or entry.status != "unlabeled":
                    return None
                status, reason = self._verdict(prediction, entries)
                guess = StoredPrediction(label=prediction.label, confidence=prediction.confidence,
                                         model_version=prediction.model_version, time=now_iso())
                entries[sha] = decided = changed(entry, status=status, prediction=guess, reason=reason)
        except IndexBusy as exc:
            self.log.warning("pseudo_label_deferred", sha256=sha, reason=str(exc))
            return None
        self.log.info("image_pseudo_labeled" if status == "pseudo" else "image_to_review", sha256=sha,
                      label=prediction.label, confidence=prediction.confidence,
                      model_version=prediction.model_version, reason=reason)
        return decided

    def _verdict(self, prediction: Prediction, entries: dict[str, IndexEntry]) -> tuple[str, Optional[str]]:
        policy, label = self.policy, prediction.label
        if not policy.enabled:
            return "review", "pseudo-labeling is off (labeling.enabled: false)"
        if prediction.confidence < policy.pseudo_threshold:
            return "review", f"confidence {prediction.confidence:.4f} below pseudo_threshold {policy.pseudo_threshold:g}"
        human = sum(1 for e in entries.values() if e.status == "human" and e.label == label)
        pseudo = sum(1 for e in entries.values() if e.pseudo_label == label)
        if pseudo + 1 > math.floor(policy.max_pseudo_ratio * human + 1e-9):
            return "review", (f"class cap: {label!r} has {pseudo} pseudo labels for {human} human labels "
                              f"(max_pseudo_ratio {policy.max_pseudo_ratio:g})")
        return "pseudo", None

    def follow(self, running_version: Optional[int]) -> list[IndexEntry]:
        """Called every scan with the version running: withdraws the pseudo labels of newer
        versions (a rollback), and returns the images to classify (again): every unlabeled
        one, when the version changed (start included) or labels were withdrawn."""
        if running_version is None:
            self._version_seen = None  # no model: the next one classifies what waits
            return []
        withdrawn = self.writer.withdraw_pseudo_labels(running_version)
        if withdrawn:
            self.log.warning("pseudo_labels_withdrawn", count=len(withdrawn), running_version=running_version,
                             made_by=sorted({e.prediction.model_version for e in withdrawn}))
        if running_version == self._version_seen and not withdrawn:
            return []
        self._version_seen = running_version
        return sorted((e for e in self.writer.entries().values() if e.status == "unlabeled"),
                      key=lambda e: e.path)


def labeling_policy(section) -> LabelingPolicy:
    """The policy of an agent config's `labeling:` section."""
    return LabelingPolicy(enabled=section.enabled, pseudo_threshold=section.pseudo_threshold,
                          max_pseudo_ratio=section.max_pseudo_ratio)
