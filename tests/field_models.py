"""Tiny real TFLite classifiers whose answers a test can predict, and photos for them.

`colour_model(red_is_head=True)` answers "head" for a reddish photo and "hardhat" for a
bluish one (mean red minus mean blue, times `strength`, as the logit); `red_is_head=False`
is the same model inverted: on photos labeled that way it scores 0. A grey photo scores
0.5 / 0.5 (the least confident answer there is). Made by TensorFlow, run by tflite-runtime
on the agent side, as the conftest's `tflite_model` is. Also the small fakes the inference
tests share: a log that records, a Prediction.
"""

from __future__ import annotations

import functools
import hashlib
import io

from PIL import Image

from fed_agent.classifier import Prediction
from fed_common.manifest import ModelFile, ModelManifest, sign

LABELS = ["head", "hardhat"]  # output order


@functools.lru_cache(maxsize=None)
def colour_model(red_is_head: bool = True, strength: float = 0.05) -> bytes:
    import numpy as np
    import tensorflow as tf

    inputs = tf.keras.Input((160, 160, 3))
    pooled = tf.keras.layers.GlobalAveragePooling2D()(inputs)
    dense = tf.keras.layers.Dense(2, activation="softmax")
    model = tf.keras.Model(inputs, dense(pooled))
    sign_ = 1.0 if red_is_head else -1.0
    weights = np.array([[strength, -strength], [0, 0], [-strength, strength]], np.float32) * sign_
    dense.set_weights([weights, np.zeros(2, np.float32)])
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def signed_model(key, data: bytes, version: int, labels=LABELS) -> bytes:
    """The signed manifest (JSON) for `data` as `version`."""
    manifest = ModelManifest(version=version, labels=list(labels), created_at=1.0,
                             file=ModelFile(name="model_float32.tflite", kind="float32", size=len(data),
                                            sha256=hashlib.sha256(data).hexdigest()))
    return sign(manifest, key).model_dump_json().encode()


def photo(colour: tuple[int, int, int], size=(96, 80), fmt="PNG") -> bytes:
    """A plain photo of one colour (PNG by default: lossless, so its mean is the colour)."""
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


def reds(n: int) -> list[bytes]:
    """n different reddish photos (a "head" to colour_model)."""
    return [photo((180 + i, 20 + i, 30)) for i in range(n)]


def blues(n: int) -> list[bytes]:
    """n different bluish photos (a "hardhat" to colour_model)."""
    return [photo((20, 30 + i, 190 + i)) for i in range(n)]


def file_photos(state_dir, head: list[bytes], hardhat: list[bytes], test_fraction: float = 0.99) -> int:
    """Drop the photos in the inbox's label folders and let the real Inbox file them; how
    many landed in the test split (nearly all, at 0.99: the split is by hash)."""
    from fed_agent.inbox import Inbox
    from fed_common.store import ImageStore, StoreLayout

    inbox = Inbox(state_dir, LABELS, test_fraction=test_fraction, settle_seconds=0, min_width=32, min_height=32)
    for label, photos in (("head", head), ("hardhat", hardhat)):
        for i, data in enumerate(photos):
            (inbox.inbox_dir / label / f"{label}-{i}.png").write_bytes(data)
    report = inbox.ingest()
    assert len(report.accepted) == len(head) + len(hardhat), report.quarantined
    return len(ImageStore(StoreLayout(state_dir).data_dir).entries("test", LABELS))


def self_testing_store(state_dir, key, margin: float = 0.05):
    """The agent's model store under `state_dir`, self-testing each model on its photos as
    the daemon's does (model_updater's factory)."""
    from fed_agent.classifier import RunningClassifier
    from fed_agent.model_store import ModelStore, models_root
    from fed_agent.self_test import SelfTest
    from fed_common.store import StoreLayout

    root = models_root(state_dir)
    return ModelStore(root, key.public_key(),
                      self_test=SelfTest(StoreLayout(state_dir).data_dir, RunningClassifier(root), margin))


class Events(list):
    """A log that keeps each line as a dict with its `event` and `level`."""

    def __getattr__(self, level):
        return lambda event, **fields: self.append({"event": event, "level": level, **fields})

    def named(self, event: str) -> list[dict]:
        return [e for e in list(self) if e["event"] == event]


def prediction(label: str, confidence: float, version: int = 1) -> Prediction:
    other = 1 - confidence
    return Prediction(label, confidence, {label: confidence, "x": other}, version)
