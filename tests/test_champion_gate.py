"""The champion gate's floor: no non-finite model, nothing below champion.min_accuracy and
nothing no better than always answering the commonest label, the first model included."""

from __future__ import annotations

import pytest

from fed_coordinator.models import champion
from fed_coordinator.models.champion import Score, gate


class Registry:
    def path(self, version: int):
        return version  # score_model is replaced below: the "path" is the version


def scored(scores: dict[int, Score]):
    return lambda folder, test_dir, labels: scores[folder]


CASES = [  # (new model's score, want promoted, words in the reason)
    (Score(0.7, non_finite=27, majority_share=0.56, images=27), False, "not finite (NaN/Inf) on 27 of 27"),
    (Score(0.55, 0, 0.5, 20), False, "below champion.min_accuracy 0.6000"),
    (Score(0.7, 0, 0.7, 20), False, "no better than always answering the commonest label"),
    (Score(0.9, 0, 0.56, 27), True, "first model: accuracy 0.9000 meets champion.min_accuracy"),
]


@pytest.mark.parametrize("score, promoted, words", CASES)
def test_first_model_meets_the_floor(monkeypatch, score, promoted, words):
    monkeypatch.setattr(champion, "score_model", scored({1: score}))
    verdict = gate(Registry(), 1, None, "test", ["head", "hardhat"], margin=0.0, min_accuracy=0.6)
    assert verdict.promoted is promoted and words in verdict.reason, verdict.reason


def test_a_non_finite_model_never_replaces_a_champion_whatever_it_scores(monkeypatch):
    monkeypatch.setattr(champion, "score_model", scored({1: Score(0.8, 0, 0.5, 20),
                                                         2: Score(1.0, 1, 0.5, 20)}))
    verdict = gate(Registry(), 2, 1, "test", ["head", "hardhat"], margin=0.0, min_accuracy=0.6)
    assert not verdict.promoted and verdict.reason.startswith("refused: outputs are not finite")


def test_a_better_model_still_wins(monkeypatch):
    monkeypatch.setattr(champion, "score_model", scored({1: Score(0.8, 0, 0.5, 20),
                                                         2: Score(0.9, 0, 0.5, 20)}))
    verdict = gate(Registry(), 2, 1, "test", ["head", "hardhat"], margin=0.05, min_accuracy=0.6)
    assert verdict.promoted and "beats champion v1" in verdict.reason
