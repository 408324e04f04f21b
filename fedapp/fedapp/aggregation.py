"""Reply checks and robust aggregation: one node's reply can cost its round, never the model.

Why: Flower's FedAvg trusts every reply. One NaN spreads to the whole head (and a NaN head
still scores the share of class 0 on a test set, since argmax of NaN is 0), a
`num-examples` of 10^12 lets one node dictate the average, a negative one flips it, a
wrongly shaped array is silently broadcast, and a reply without its metrics raises and
ends the campaign. So every train reply is checked here against what the server sent
(the same array names, shapes and dtypes, every value finite, `0 < num-examples <= cap`,
and the label counts: `human-examples` >= 1 and `pseudo-examples` >= 0 integers, no pseudo
labels unless the campaign uses them, `num-examples` equal to what the two counts give by
fedapp.example_count: a node's weight is what its stated labels give, never a number on its
own; a node that lies about both is bounded by the cap and the robust aggregates) before
it is counted; a reply that fails is a failed node with the reason, and the round goes on
with the others. The aggregate itself is selectable: plain FedAvg (weighted by
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

from .example_count import example_count
from .run_config import PSEUDO_LABEL_WEIGHT

ARRAYS_KEY, METRICS_KEY, EXAMPLES_KEY = "arrays", "metrics", "num-examples"
HUMAN_KEY, PSEUDO_KEY = "human-examples", "pseudo-examples"
COUNT_KEYS = (EXAMPLES_KEY, HUMAN_KEY, PSEUDO_KEY)


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
class PseudoLabelUse:
    """The campaign's use_pseudo_labels and pseudo_label_weight, which a reply's counts must fit."""

    enabled: bool = False
    weight: float = PSEUDO_LABEL_WEIGHT


@dataclass(frozen=True)
class CheckedReply:
    arrays: dict[str, np.ndarray]
    num_examples: int
    metrics: dict[str, float]
    human_examples: int | None = None  # None: a reply from a ClientApp that does not say
    pseudo_examples: int | None = None


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


def _checked_count(metrics, key: str, low: int, high: int) -> int:
    value = metrics.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ReplyRejected(f"metric '{key}' must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ReplyRejected(f"metric '{key}' = {value} is outside {low}..{high} (campaign.max_examples_per_node)")
    return value


def _checked_label_counts(metrics, count: int, max_examples: int, pseudo: PseudoLabelUse
                          ) -> tuple[int | None, int | None]:
    """(human, pseudo) labels the node trained on; (None, None) from a ClientApp that does
    not report them, accepted only while the campaign uses no pseudo labels."""
    present = [key for key in (HUMAN_KEY, PSEUDO_KEY) if key in metrics]
    if not present and not pseudo.enabled:
        return None, None
    if len(present) < 2:
        missing = HUMAN_KEY if HUMAN_KEY not in present else PSEUDO_KEY
        raise ReplyRejected(f"reply has no metric '{missing}' (it says how many labels of each kind it trained on)")
    human = _checked_count(metrics, HUMAN_KEY, 1, max_examples)  # pseudo labels never stand alone
    used = _checked_count(metrics, PSEUDO_KEY, 0, max_examples)
    if used and not pseudo.enabled:
        raise ReplyRejected(f"metric '{PSEUDO_KEY}' = {used} but campaign.use_pseudo_labels is off")
    want = example_count(human, used, pseudo.weight)
    if count != want:
        raise ReplyRejected(f"metric '{EXAMPLES_KEY}' = {count} does not match {human} human + {used} pseudo "
                            f"labels at weight {pseudo.weight:g} (= {want})")
    return human, used


def _checked_metrics(content: RecordDict, max_examples: int) -> tuple[int, dict[str, float]]:
    if METRICS_KEY not in content.metric_records:
        raise ReplyRejected(f"reply has no MetricRecord '{METRICS_KEY}'")
    metrics = content.metric_records[METRICS_KEY]
    count = _checked_count(metrics, EXAMPLES_KEY, 1, max_examples)
    scalars = {k: float(v) for k, v in metrics.items()
               if k not in COUNT_KEYS and isinstance(v, (int, float)) and math.isfinite(float(v))}
    return count, scalars


def check_reply(content: RecordDict, sent: dict[str, ArraySpec], max_examples: int,
                pseudo: PseudoLabelUse = PseudoLabelUse()) -> CheckedReply:
    """The reply's arrays, example count and label counts, or ReplyRejected saying what is wrong."""
    arrays = _checked_arrays(content, sent)
    count, metrics = _checked_metrics(content, max_examples)
    human, used = _checked_label_counts(content.metric_records[METRICS_KEY], count, max_examples, pseudo)
    return CheckedReply(arrays, count, metrics, human, used)


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
    if all(r.human_examples is not None for r in replies):
        metrics[HUMAN_KEY] = sum(r.human_examples for r in replies)
        metrics[PSEUDO_KEY] = sum(r.pseudo_examples for r in replies)
    return ArrayRecord(arrays), metrics
