"""Early stopping on the server's own loss: `rounds` is a maximum, not a promise.

Why: on the shared photos the head reaches its accuracy in round 1 or 2, and every later
round costs a whole Flower round trip (a clientapp process per node, two 3 s polls) for
nothing. The ServerApp evaluates the global head on the server's test photos after every
round anyway (round 0 is the initial head); this watches that log loss and says when it has
not improved by at least `min_delta` for `patience` rounds in a row, never before
`min_rounds`. The round it converged at is the last round that did improve; the campaign's
weights are the last round's (the round that showed no further gain), so choosing the
final model never looks at the test photos more than the rule itself does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class Converged(Exception):
    """Raised from the strategy's evaluate function to leave Flower's round loop early.

    Flower's `Strategy.start` has no hook to stop, and the evaluation after each round is
    where the ServerApp learns the loss; the exception carries the arrays it evaluated."""

    def __init__(self, server_round: int, arrays, reason: str) -> None:
        super().__init__(reason)
        self.server_round, self.arrays, self.reason = server_round, arrays, reason


@dataclass
class EarlyStopping:
    """Server loss per round in, "stop now" out. `patience` 0 turns it off."""

    min_delta: float = 0.01
    patience: int = 2
    min_rounds: int = 2
    best_loss: float = math.inf
    best_round: int = 0
    rounds_without_gain: int = 0

    def observe(self, server_round: int, loss: float) -> bool:
        """Record round `server_round`'s server loss; True when the campaign should stop here.

        As in Keras' EarlyStopping, the best loss moves only on a gain of `min_delta`, so a
        slow steady gain (less than `min_delta` a round) still counts once it adds up. A NaN
        loss is never a gain."""
        if loss < self.best_loss - self.min_delta:  # False for NaN; gains add up across rounds
            self.best_loss, self.best_round, self.rounds_without_gain = loss, server_round, 0
        elif server_round > 0:
            self.rounds_without_gain += 1
        if self.patience <= 0 or server_round < self.min_rounds:
            return False
        return self.rounds_without_gain >= self.patience

    def reason(self, server_round: int) -> str:
        return (f"converged at round {self.best_round}: server loss did not improve by "
                f"{self.min_delta:g} or more for {self.rounds_without_gain} round(s) "
                f"(stopped after round {server_round})")
