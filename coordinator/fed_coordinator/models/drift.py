"""Is an agent's running model drifting? Its recent low-confidence share against its own baseline.

Why against its own history and not a fleet-wide number: every camera sees its own scene
(light, angle, what walks past), so a share that is normal on one Pi is alarming on another.
What moves is the signal: when a Pi that used to be unsure of one photo in ten becomes unsure
of every other photo, its scene has changed under the model (a moved camera, new gear, a
dirty lens), and the model needs new photos from there.

The definition (settings in the coordinator's `monitoring:` section):

- only summaries of one model version count (the agent's running one): a new model changes
  the confidence distribution, so a share is never compared across versions;
- recent window: the latest summaries, newest first, until they total at least
  `drift_min_images` images;
- baseline: the summaries of the same version received in the `baseline_days` before the
  recent window's first one; they must total `drift_min_images` images too;
- drifting when recent share - baseline share >= `drift_rise` and recent share >=
  `drift_factor` x baseline share. Too few images on either side is "not drifting", with
  the reason in words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from fed_coordinator.config import MonitoringSection


@dataclass(frozen=True)
class Window:
    """Summed summaries: the recent window or the baseline."""

    images: int = 0
    low_confidence_images: int = 0

    @property
    def share(self) -> Optional[float]:
        return self.low_confidence_images / self.images if self.images else None

    def plus(self, images: int, low_confidence_images: int) -> "Window":
        return Window(self.images + images, self.low_confidence_images + low_confidence_images)


@dataclass(frozen=True)
class DriftCheck:
    model_version: Optional[int]
    drifting: bool
    reason: str  # in words, whichever way it went
    recent: Window = Window()
    baseline: Window = Window()
    compared: bool = False  # both windows had enough images, so the shares were compared

    def to_json(self) -> dict:
        return {"model_version": self.model_version, "drifting": self.drifting, "reason": self.reason,
                "compared": self.compared,
                "recent_images": self.recent.images, "recent_share": self.recent.share,
                "baseline_images": self.baseline.images, "baseline_share": self.baseline.share}


def verdict(model_version: Optional[int], recent: Window, baseline: Window,
            settings: MonitoringSection) -> DriftCheck:
    """The drift verdict on one version's recent window and baseline (see the module's text;
    api.field_history sums them from the stored summaries)."""
    if model_version is None:
        return DriftCheck(None, False, "no model version to compare within")
    name, need = f"v{model_version}", settings.drift_min_images
    if recent.images < need:
        return DriftCheck(model_version, False, f"too few images: {recent.images} of {need} ({name})", recent)
    if baseline.images < need:
        return DriftCheck(model_version, False, f"no baseline yet: {baseline.images} of {need} images before "
                          f"the latest {recent.images} ({name})", recent, baseline)
    drifting = (recent.share - baseline.share >= settings.drift_rise
                and recent.share >= settings.drift_factor * baseline.share)
    words = (f"low-confidence share {recent.share:.2f} in the latest {recent.images} images, baseline "
             f"{baseline.share:.2f} in {baseline.images} before ({name})")
    return DriftCheck(model_version, drifting, words if drifting else f"steady: {words}", recent, baseline,
                      compared=True)
