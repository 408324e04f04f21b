"""Reply checks and robust aggregation: one node's reply can cost its round, never the model.

Why: Flower's FedAvg trusts every reply. One NaN spreads to the whole head (and a NaN head
still scores the share of class 0 on a test set, since argmax of NaN is 0), a
`num-examples` of 10^12 lets one node dictate the average, a negative one flips it, a
wrongly shaped array is silently broadcast, and a reply without its metrics raises and
ends the campaign. So every train reply is checked here against what the server sent
(the same array names, shapes and dtypes, every value finite, `0 < num-examples <= cap`)
before it is counted; a reply that fails is a failed node with the reason, and the round
goes on with the others. The aggregate itself is selectable: plain FedAvg (weighted by
examples), or a coordinate-wise trimmed mean or median, which one poisoned node cannot
move far (both unweighted, so an inflated example count buys nothing either).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import numpy as np
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.fedtrimmedavg import trim_mean

ARRAYS_KEY, METRICS_KEY, EXAMPLES_KEY = "arrays", "metrics", "num-examples"


class Aggregation(str, Enum):
    """`campaign.aggregation`: how the checked replies of a round are combined."""

    FEDAVG = "fedavg"
    TRIMMED_MEAN = "trimmed_mean"
    MEDIAN = "median"


class ReplyRejected(ValueError):
    """A train reply that must not be aggregated; the message is the reason recorded."""


@dataclass(frozen=True)
class ArraySpec:
    """What one sent array looks like; a reply must match it exactly."""

    shape: tuple[int, ...]
    dtype: str


def array_specs(arrays: ArrayRecord) -> dict[str, ArraySpec]:
    return {name: ArraySpec(tuple(arr.shape), str(arr.dtype)) for name, arr in arrays.items()}


@dataclass(frozen=True)
class CheckedReply:
    arrays: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float]


def _checked_arrays(content: RecordDict, sent: dict[str, ArraySpec]) -> dict[str, np.ndarray]:
    if ARRAYS_KEY not in content.array_records or len(content.array_records) != 1:
        raise ReplyRejected(f"reply must hold exactly one ArrayRecord '{ARRAYS_KEY}', "
                            f"got {sorted(content.array_records)}")
    record = content.array_records[ARRAYS_KEY]
    if set(record) != set(sent):
        raise ReplyRejected(f"array names {sorted(record)} differ from the ones sent {sorted(sent)}")
    out = {}
    for name, spec in sent.items():
        try:
            value = record[name].numpy()
        except (TypeError, ValueError, EOFError) as exc:
            raise ReplyRejected(f"array '{name}' does not decode: {exc}") from exc
        if tuple(value.shape) != spec.shape or str(value.dtype) != spec.dtype:
            raise ReplyRejected(f"array '{name}' is {value.dtype}{list(value.shape)}, "
                                f"sent {spec.dtype}{list(spec.shape)}")
        if not np.isfinite(value).all():
            bad = int((~np.isfinite(value)).sum())
            raise ReplyRejected(f"array '{name}' has {bad} non-finite value(s) (NaN or Inf)")
        out[name] = value
    return out


def _checked_metrics(content: RecordDict, max_examples: int) -> tuple[int, dict[str, float]]:
    if METRICS_KEY not in content.metric_records:
        raise ReplyRejected(f"reply has no MetricRecord '{METRICS_KEY}'")
    metrics = content.metric_records[METRICS_KEY]
    count = metrics.get(EXAMPLES_KEY)
    if not isinstance(count, int) or isinstance(count, bool):
        raise ReplyRejected(f"metric '{EXAMPLES_KEY}' must be an integer, got {count!r}")
    if not 0 < count <= max_examples:
        raise ReplyRejected(f"metric '{EXAMPLES_KEY}' = {count} is outside 1..{max_examples} "
                            f"(campaign.max_examples_per_node)")
    scalars = {k: float(v) for k, v in metrics.items()
               if k != EXAMPLES_KEY and isinstance(v, (int, float)) and math.isfinite(float(v))}
    return count, scalars


def check_reply(content: RecordDict, sent: dict[str, ArraySpec], max_examples: int) -> CheckedReply:
    """The reply's arrays and example count, or ReplyRejected saying what is wrong."""
    arrays = _checked_arrays(content, sent)
    count, metrics = _checked_metrics(content, max_examples)
    return CheckedReply(arrays, count, metrics)


def _combine(stack: np.ndarray, weights: np.ndarray, method: Aggregation, trim_fraction: float) -> np.ndarray:
    if method is Aggregation.MEDIAN:
        return np.median(stack, axis=0)
    if method is Aggregation.TRIMMED_MEAN:
        replies = stack.shape[0]
        # At least one from each end once there are three replies: with Flower's default
        # of 0.2 a fleet of 3 or 4 would otherwise trim nothing.
        fraction = max(trim_fraction, 1.0 / replies + 1e-9) if replies >= 3 else 0.0
        return trim_mean(stack, min(fraction, 0.49))
    return np.tensordot(weights / weights.sum(), stack, axes=1)


def aggregate(replies: list[CheckedReply], method: Aggregation, trim_fraction: float = 0.2
              ) -> tuple[ArrayRecord, MetricRecord]:
    """One aggregated ArrayRecord (names and dtypes as sent) and example-weighted metrics."""
    weights = np.array([r.num_examples for r in replies], dtype=np.float64)
    arrays = {}
    for name, first in replies[0].arrays.items():
        stack = np.stack([r.arrays[name].astype(np.float64) for r in replies])
        arrays[name] = Array(np.asarray(_combine(stack, weights, method, trim_fraction), first.dtype))
    shares = weights / weights.sum()
    common = set.intersection(*(set(r.metrics) for r in replies))
    metrics = MetricRecord({k: float(sum(s * r.metrics[k] for s, r in zip(shares, replies)))
                            for k in sorted(common)})
    metrics[EXAMPLES_KEY] = int(weights.sum())
    return ArrayRecord(arrays), metrics
