"""Temperature scaling of a classifier's probabilities, and how well-calibrated they are.

Why here (numpy only): the coordinator fits the temperature when it registers a model and
every Pi applies it to what its TFLite model answers; both must compute exactly the same
numbers, so both use these functions. The exported models end in a softmax, so the
temperature works on log-probabilities: softmax(log p / T) equals softmax(logits / T), the
logits' per-image constant cancelling. A probability of exactly 0 (an int8 model's
quantized softmax answers 0 for anything below half a step of 1/256) has no logarithm, so
probabilities are clipped to a floor first; the floor is part of the calibration shipped.
"""

from __future__ import annotations

import numpy as np

TEMPERATURE_RANGE = (0.05, 20.0)
MAX_ECE_BINS = 15
# How far the fit trusts a small calibration set: log T has a normal prior N(0, sigma^2)
# (T = 1: the model as trained). A set with no confident mistake says little about T (its
# likelihood keeps rising as T -> 0), and without a prior the fit would run to the bound
# and make the model *more* sure; a few confident mistakes outweigh the prior at once.
PRIOR_SIGMA = 1.0
_GRID = 241


def calibrated(probabilities, temperature: float, floor: float) -> np.ndarray:
    """softmax(log(max(p, floor)) / T) along the last axis: calibrated, summing to 1."""
    logp = np.log(np.clip(np.asarray(probabilities, np.float64), floor, None))
    z = logp / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def ece_bins(images: int) -> int:
    """15 equal-width bins, fewer for small sets (one bin per 10 images, at least one): a
    bin of one or two images measures nothing but that image."""
    return int(min(MAX_ECE_BINS, max(1, images // 10)))


def expected_calibration_error(probabilities, labels, bins: int) -> float:
    """Sum over equal-width confidence bins of (share of images) * |accuracy - mean confidence|."""
    probs = np.asarray(probabilities, np.float64)
    labels = np.asarray(labels)
    if not len(labels):
        raise ValueError("no images to measure calibration on")
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def _objective(log_temperature: float, logp: np.ndarray, labels: np.ndarray) -> float:
    """Negative log-likelihood of the labels at T = exp(log_temperature), plus the prior."""
    z = logp / np.exp(log_temperature)
    z -= z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    nll = float((log_norm - z[np.arange(len(labels)), labels]).sum())
    return nll + log_temperature ** 2 / (2 * PRIOR_SIGMA ** 2)


def fit_temperature(probabilities, labels, floor: float) -> float:
    """The temperature in TEMPERATURE_RANGE that maximises the labels' likelihood (with the
    prior above): a log-spaced grid, then a golden-section search around its best point.
    Deterministic: the same images give the same T."""
    labels = np.asarray(labels, int)
    if not len(labels):
        raise ValueError("no images to fit a temperature on")
    logp = np.log(np.clip(np.asarray(probabilities, np.float64), floor, None))
    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    grid = np.linspace(lo, hi, _GRID)
    values = [_objective(t, logp, labels) for t in grid]
    best = int(np.argmin(values))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, _GRID - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if _objective(c, logp, labels) <= _objective(d, logp, labels):
            b = d
        else:
            a = c
    return float(np.clip(np.exp((a + b) / 2), *TEMPERATURE_RANGE))
