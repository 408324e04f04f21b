"""What a node's training examples count for in FedAvg, computed the same way on both sides.

A reply says how many human and how many pseudo labels the node trained on; its
`num-examples` (the FedAvg weight) is then `human + round(pseudo_label_weight x pseudo)`:
the sum of the weights its loss gave its examples. Why not the raw count: pseudo labels are
the fleet's own model's answers, so a node with many of them would pull the average toward
what the model already believes as hard as a node with as many people's labels; and why not
human only: the update a node sends is made of its pseudo labels too, in that measure. The
ClientApp computes it and the ServerApp recomputes it from the two counts (reply checks in
aggregation.py), so a node cannot claim a weight its counts do not give.
"""

from __future__ import annotations

import math


def example_count(human: int, pseudo: int, pseudo_weight: float) -> int:
    """FedAvg's example count: human labels count 1 each, pseudo labels `pseudo_weight` each
    (the total rounded half up, so both sides get the same integer)."""
    return int(human + math.floor(pseudo_weight * pseudo + 0.5))
