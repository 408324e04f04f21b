"""The classifier head: seeded initialisation, numpy inference and the TFLite trainer.

Head weights are the only thing that travels each round: [w0 (1280x128), b0, w1 (128xC), b1].
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from .tflite import load_interpreter

WEIGHT_NAMES = ("w0", "b0", "w1", "b1")


def init_head(seed: int, dim: int = 1280, hidden: int = 128, classes: int = 2) -> list[np.ndarray]:
    """Glorot-uniform kernels and zero biases, as Keras Dense does, from a fixed seed."""
    rng = np.random.default_rng(seed)

    def glorot(fan_in: int, fan_out: int) -> np.ndarray:
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)

    return [
        glorot(dim, hidden),
        np.zeros(hidden, np.float32),
        glorot(hidden, classes),
        np.zeros(classes, np.float32),
    ]


def head_record(weights: list[np.ndarray]) -> ArrayRecord:
    """The head as it travels: arrays named w0, b0, w1, b1, so a reply's problems name them."""
    return ArrayRecord({name: Array(np.ascontiguousarray(w, np.float32)) for name, w in zip(WEIGHT_NAMES, weights)})


def predict_proba(weights: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    w0, b0, w1, b1 = weights
    logits = np.maximum(x @ w0 + b0, 0.0) @ w1 + b1
    logits = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return 0.0
    return float((predict_proba(weights, x).argmax(axis=1) == y).mean())


class HeadTrainer:
    """Drives the exported TFLite trainer (signatures train/infer/get_weights/set_weights)."""

    def __init__(self, model_path: str, num_threads: int = 2) -> None:
        self._interp = load_interpreter(model_path, num_threads=num_threads)
        self._train = self._interp.get_signature_runner("train")
        self._get = self._interp.get_signature_runner("get_weights")
        self._set = self._interp.get_signature_runner("set_weights")

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self._set(**{n: np.ascontiguousarray(w, np.float32) for n, w in zip(WEIGHT_NAMES, weights)})

    def get_weights(self) -> list[np.ndarray]:
        out = self._get()
        return [np.array(out[n], np.float32) for n in WEIGHT_NAMES]

    def fit(self, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
            lr: float, momentum: float, seed: int) -> tuple[float, float]:
        """Mini-batch SGD over shuffled data; returns the last epoch's (loss, accuracy)."""
        rng = np.random.default_rng(seed)
        x = np.ascontiguousarray(x, np.float32)  # the interpreter rejects any other dtype
        y = np.ascontiguousarray(y, np.int32)
        n = len(y)
        if n == 0:
            raise ValueError("no training examples")
        loss = acc = 0.0
        lr_t, mom_t = np.float32(lr), np.float32(momentum)
        for _ in range(epochs):
            order = rng.permutation(n)
            total_loss = total_correct = 0.0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]  # never empty: start < n
                out = self._train(x=x[idx], y=y[idx], lr=lr_t, momentum=mom_t)
                total_loss += float(out["loss"]) * len(idx)
                total_correct += float(out["correct"])
            loss, acc = total_loss / n, total_correct / n
        return loss, acc
