"""The seed project's recipe, once, for every benchmark that compares against it.

The seed trained the whole Keras model on each client: MobileNetV2 backbone (frozen, but run
every epoch on every image) + Dense(128, relu) + Dense(2, softmax), Adam, categorical cross
entropy, and exchanged all the model's weights each round (FedAvg over every array, backbone
batch-norm statistics included). campaign_compute.py runs it in-process; seed_app/ runs it as
a Flower App through the same SuperLink and SuperNodes as fedapp (end_to_end.py).

Keras is imported inside the functions: campaign_compute.py times this design's TFLite path
first and checks TensorFlow is not loaded yet.
"""

from __future__ import annotations

import numpy as np

LABELS = ["head", "hardhat"]
HIDDEN_UNITS = 128


def fedavg(weight_sets: list[list[np.ndarray]], counts: list[int]) -> list[np.ndarray]:
    """Example-weighted mean of each array, as Flower's FedAvg computes it."""
    total = sum(counts)
    return [sum(ws[i] * (n / total) for ws, n in zip(weight_sets, counts)) for i in range(len(weight_sets[0]))]


def images_and_targets(scan, classes: int = len(LABELS)) -> tuple[np.ndarray, np.ndarray]:
    """A folder scan's pixels (N, 160, 160, 3) and one-hot targets, as the seed fed Keras."""
    from fedapp.images import load_image

    x = np.stack([load_image(f.path) for f in scan.files])
    y = np.eye(classes, dtype=np.float32)[[f.label for f in scan.files]]
    return x, y


def build_seed_model(weights_file: str, seed: int | None = None, classes: int = len(LABELS)):
    """The seed's compiled model: frozen backbone (coordinator's build_backbone, same
    preprocessing as this design's exports) + the dense head, Adam at Keras defaults."""
    import keras

    from fed_coordinator.models.keras_model import build_backbone

    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = keras.Sequential([build_backbone(weights_file),
                              keras.layers.Dense(HIDDEN_UNITS, activation="relu"),
                              keras.layers.Dense(classes, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def weights_bytes(weights: list[np.ndarray]) -> int:
    return sum(w.nbytes for w in weights)


def model_accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy against one-hot targets."""
    return float((model.predict(x, verbose=0).argmax(1) == y.argmax(1)).mean())
