"""Early stopping on a scripted server-loss sequence (fedapp.early_stop)."""

from __future__ import annotations

import math

import pytest
from fedapp.early_stop import EarlyStopping


def stop_round(losses: list[float], **settings) -> int | None:
    """The round (index into losses; 0 is the initial head) at which the rule says stop."""
    rule = EarlyStopping(**settings)
    for server_round, loss in enumerate(losses):
        if rule.observe(server_round, loss):
            return server_round
    return None


def test_stops_after_patience_rounds_without_gain():
    # gains at 1 and 2, then 3 and 4 improve by less than min_delta: stop after round 4
    losses = [0.70, 0.30, 0.20, 0.195, 0.199, 0.10]
    assert stop_round(losses, min_delta=0.01, patience=2, min_rounds=2) == 4
    rule = EarlyStopping(min_delta=0.01, patience=2, min_rounds=2)
    for server_round, loss in enumerate(losses[:5]):
        rule.observe(server_round, loss)
    assert rule.best_round == 2
    assert "converged at round 2" in rule.reason(4)


def test_never_stops_before_min_rounds():
    flat = [0.5] * 8  # no gain ever: patience 1 would stop at round 1
    assert stop_round(flat, min_delta=0.01, patience=1, min_rounds=5) == 5
    assert stop_round(flat, min_delta=0.01, patience=1, min_rounds=1) == 1


def test_a_gain_resets_the_count():
    losses = [0.7, 0.69, 0.5, 0.499, 0.3, 0.299, 0.298]
    assert stop_round(losses, min_delta=0.01, patience=2, min_rounds=1) == 6


def test_slow_steady_gains_add_up():
    # 0.006 a round is below min_delta each time, but two of them are a gain of 0.012
    losses = [0.5, 0.494, 0.488, 0.482, 0.476, 0.470]
    assert stop_round(losses, min_delta=0.01, patience=2, min_rounds=1) is None


def test_nan_is_never_a_gain():
    losses = [0.5, 0.3, math.nan, math.nan]
    assert stop_round(losses, min_delta=0.01, patience=2, min_rounds=1) == 3


@pytest.mark.parametrize("losses", [[0.5] * 10, [1.0, 0.5, 0.25, 0.1]])
def test_patience_zero_is_off(losses):
    assert stop_round(losses, min_delta=0.01, patience=0, min_rounds=0) is None
