"""A new model's self-test on this Pi's own labeled test images, against the model running.

Why: the coordinator's champion gate scores a model on the server's test photos, but each
camera sees its own scene (light, angle, people). A model that is better on the server and
clearly worse here must not replace the one that works here. So before a new version may
become ``current`` it classifies the Pi's test split (the images the inbox filed under
``data/test/``, never trained on), and so does the running model, on the same images; the new
one is refused (ManifestRejected, naming both scores and versions) when it scores below the
running one by more than ``model.self_test_margin``. With no labeled test images there is
nothing to compare: the smoke inference alone decides, as before.

The images are a deterministic choice (the first `limit` by SHA-256: a fixed, unbiased sample
of the split), so the two models, and two Pis holding the same photos, see the same ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import structlog
from fed_common.manifest import ManifestRejected, ModelManifest
from fed_common.store import ImageStore, IndexEntry
from fedapp.images import decode_image

from .classifier import ModelClassifier, RunningClassifier
from .model_store import SelfTestResult

DEFAULT_LIMIT = 200  # about 20 s per model on a Pi 4: the update thread may take that long
_EPSILON = 1e-9  # "more than the margin": an exactly-at-margin score passes


class SelfTest:
    """The `self_test` a ModelStore runs on each model it installs."""

    def __init__(self, data_dir: str | Path, running: RunningClassifier, margin: float,
                 limit: int = DEFAULT_LIMIT, log=None) -> None:
        self.store, self.running, self.margin, self.limit = ImageStore(data_dir), running, margin, limit
        self.log = log or structlog.get_logger()

    def test_images(self, labels: list[str]) -> list[IndexEntry]:
        """The test split's images of these labels, the first `limit` by SHA-256."""
        return sorted(self.store.entries("test", labels), key=lambda e: e.sha256)[: self.limit]

    def __call__(self, model_path: Path, manifest: ModelManifest) -> SelfTestResult:
        candidate = ModelClassifier(model_path, manifest, self.log)
        candidate.smoke()
        entries = self.test_images(list(manifest.labels))
        running = self._running_model(manifest.version)
        images, new_right, old_right = self._score(entries, candidate, running)
        if not images:
            self.log.info("model_self_test", version=manifest.version, images=0, outcome="smoke inference only")
            return SelfTestResult(version=manifest.version)
        accuracy = new_right / images
        result = SelfTestResult(version=manifest.version, accuracy=round(accuracy, 4), images=images,
                                margin=self.margin, running_version=running.version if running else None,
                                running_accuracy=round(old_right / images, 4) if running else None)
        if running is not None and accuracy < old_right / images - self.margin - _EPSILON:
            reason = (f"self-test: v{manifest.version} scores {accuracy:.2f} on {images} test images, "
                      f"v{running.version} scores {old_right / images:.2f}; more than {self.margin:g} below")
            self.log.warning("model_self_test", version=manifest.version, outcome="refused", reason=reason)
            raise ManifestRejected(reason)
        self.log.info("model_self_test", version=manifest.version, outcome="passed", accuracy=result.accuracy,
                      images=images, running_version=result.running_version,
                      running_accuracy=result.running_accuracy)
        return result

    def _running_model(self, candidate_version: int) -> Optional[ModelClassifier]:
        """The model to compare with: the one running, unless it is this very version (a
        reinstall) or it cannot be loaded (then the candidate is judged alone)."""
        try:
            model = self.running.model()
        except (OSError, ValueError) as exc:  # ManifestRejected is a ValueError
            self.log.warning("model_self_test_running_unusable", error=str(exc)[:300])
            return None
        return model if model is not None and model.version != candidate_version else None

    def _score(self, entries: list[IndexEntry], candidate: ModelClassifier,
               running: Optional[ModelClassifier]) -> tuple[int, int, int]:
        """(images classified, right by the candidate, right by the running model); an image
        that cannot be read any more (removed meanwhile) is left out of both scores."""
        images = new_right = old_right = 0
        for entry in entries:
            path = self.store.path_of(entry)
            try:
                pixels = decode_image(path.read_bytes(), str(path))
            except (OSError, ValueError) as exc:
                self.log.warning("model_self_test_image_skipped", file=str(path), error=str(exc)[:300])
                continue
            images += 1
            try:
                new_right += candidate.classify(pixels).label == entry.label
            except ValueError as exc:  # no finite answer for a real photo: not a model to run
                raise ManifestRejected(f"self-test: v{candidate.version} fails on {path.name}: {exc}") from None
            if running is not None:
                old_right += _right(running, pixels, entry.label)
        return images, new_right, old_right


def _right(model: ModelClassifier, pixels, label: str) -> bool:
    """Did the running model get it right? An image it cannot answer counts as wrong."""
    try:
        return model.classify(pixels).label == label
    except ValueError:
        return False
