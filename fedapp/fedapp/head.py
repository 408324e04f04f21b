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
    """Drives the exported TFLite trainer (signatures train/infer/get_weights/set_weights).

    The trainer's `train` takes a `sample_weight` per example (a pseudo label weighs less than
    a person's label). A trainer exported before that input existed still trains unweighted;
    asked for weights other than 1 it refuses rather than silently ignore them."""

    def __init__(self, model_path: str, num_threads: int = 2) -> None:
        self._interp = load_interpreter(model_path, num_threads=num_threads)
        self._train_runner = self._interp.get_signature_runner("train")
        self._get = self._interp.get_signature_runner("get_weights")
        self._set = self._interp.get_signature_runner("set_weights")
        inputs = self._interp.get_signature_list()["train"]["inputs"]
        self.weighted = "sample_weight" in inputs

    def _train(self, *, x: np.ndarray, y: np.ndarray, lr, momentum,
               sample_weight: np.ndarray | None = None) -> dict:
        """One SGD-momentum step on a batch (weights of 1 when none are given)."""
        if not self.weighted:
            if sample_weight is not None and not np.all(sample_weight == 1):
                raise ValueError("this trainer.tflite has no sample_weight input (exported before "
                                 "weighted training); export it again to weight examples")
            return self._train_runner(x=x, y=y, lr=lr, momentum=momentum)
        if sample_weight is None:
            sample_weight = np.ones(len(y), np.float32)
        return self._train_runner(x=x, y=y, sample_weight=np.ascontiguousarray(sample_weight, np.float32),
                                  lr=lr, momentum=momentum)

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self._set(**{n: np.ascontiguousarray(w, np.float32) for n, w in zip(WEIGHT_NAMES, weights)})

    def get_weights(self) -> list[np.ndarray]:
        out = self._get()
        return [np.array(out[n], np.float32) for n in WEIGHT_NAMES]

    def fit(self, x: np.ndarray, y: np.ndarray, *, epochs: int, batch_size: int,
            lr: float, momentum: float, seed: int,
            sample_weight: np.ndarray | None = None) -> tuple[float, float]:
        """Mini-batch SGD over shuffled data; returns the last epoch's (loss, accuracy).

        `sample_weight` (one per example, default 1) scales each example's loss; the loss
        returned is the weighted one per example, the accuracy counts every example once."""
        rng = np.random.default_rng(seed)
        x = np.ascontiguousarray(x, np.float32)  # the interpreter rejects any other dtype
        y = np.ascontiguousarray(y, np.int32)
        n = len(y)
        if n == 0:
            raise ValueError("no training examples")
        weight = None if sample_weight is None else np.ascontiguousarray(sample_weight, np.float32)
        if weight is not None and (weight.shape != (n,) or not np.isfinite(weight).all() or (weight < 0).any()):
            raise ValueError(f"sample_weight must be {n} finite weights >= 0")
        loss = acc = 0.0
        lr_t, mom_t = np.float32(lr), np.float32(momentum)
        for _ in range(epochs):
            order = rng.permutation(n)
            total_loss = total_correct = 0.0
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]  # never empty: start < n
                out = self._train(x=x[idx], y=y[idx], lr=lr_t, momentum=mom_t,
                                  sample_weight=None if weight is None else weight[idx])
                total_loss += float(out["loss"]) * len(idx)
                total_correct += float(out["correct"])
            loss, acc = total_loss / n, total_correct / n
        return loss, acc
