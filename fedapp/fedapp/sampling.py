"""Which agents train in a round, for large fleets (`nodes_per_round`; 0 means all).

Why a sample at all: every node in a round costs the SuperLink, the ServerApp and the
round's slowest Pi; with hundreds of Pis a round that waits on all of them is as slow as
the worst. Why prefer agents not yet used: a plain random sample leaves some Pis out of a
campaign for many rounds by chance (their photos never count); taking the unused ones first
uses every node of a stable fleet within ceil(N / k) rounds, then starts a new pass. Why
seeded by the campaign: a campaign can be replayed (same online nodes, same choices), and
two nights do not repeat the same order. FedAvg's weights keep their meaning: the sample's
replies are averaged by their example counts, exactly as a full round's are.
"""

from __future__ import annotations

import random
import zlib


class NodeSampler:
    def __init__(self, per_round: int, seed: int, campaign: str) -> None:
        self.per_round = per_round
        self.rng = random.Random(seed * 1_000_003 + zlib.crc32(campaign.encode()))
        self.used: set[int] = set()  # in the current pass over the fleet

    def choose(self, online: list[int]) -> list[int]:
        """The nodes to train this round, from the online ones (sorted)."""
        online = sorted(online)
        if self.per_round <= 0 or len(online) <= self.per_round:
            self.used.update(online)
            return online
        fresh = [node for node in online if node not in self.used]
        if not fresh:  # everyone online had a turn: a new pass
            self.used.clear()
            fresh = online
        if len(fresh) >= self.per_round:
            chosen = self.rng.sample(fresh, self.per_round)
        else:  # the last few of this pass, topped up from those already used
            seen = [node for node in online if node not in fresh]
            chosen = fresh + self.rng.sample(seen, self.per_round - len(fresh))
        self.used.update(chosen)
        return sorted(chosen)
