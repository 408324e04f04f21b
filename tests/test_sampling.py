"""Sampling for large fleets (fedapp.sampling.NodeSampler, `nodes_per_round`)."""

from __future__ import annotations

import math

import pytest
from fedapp.run_config import RunSettings
from fedapp.sampling import NodeSampler


@pytest.mark.parametrize("fleet,per_round", [(10, 3), (7, 2), (30, 5), (5, 4), (12, 12), (3, 1)])
def test_every_node_is_used_within_ceil_n_over_k_rounds(fleet, per_round):
    nodes = list(range(1000, 1000 + fleet))
    for campaign in ("c-a", "c-b", "c-c"):
        sampler = NodeSampler(per_round, seed=0, campaign=campaign)
        used: set[int] = set()
        for _ in range(math.ceil(fleet / per_round)):
            chosen = sampler.choose(nodes)
            assert len(chosen) == per_round and len(set(chosen)) == per_round
            assert set(chosen) <= set(nodes)
            used.update(chosen)
        assert used == set(nodes)


def test_zero_means_all_and_a_small_fleet_trains_whole():
    assert NodeSampler(0, 0, "c").choose([3, 1, 2]) == [1, 2, 3]
    assert NodeSampler(5, 0, "c").choose([3, 1, 2]) == [1, 2, 3]


def test_seeded_by_campaign_reproducible_and_varied():
    nodes = list(range(50))

    def sequence(seed, campaign):
        sampler = NodeSampler(5, seed, campaign)
        return [sampler.choose(nodes) for _ in range(4)]

    assert sequence(0, "c-1") == sequence(0, "c-1")
    assert sequence(0, "c-1") != sequence(0, "c-2")
    assert sequence(0, "c-1") != sequence(1, "c-1")


def test_nodes_that_come_and_go_are_still_preferred_when_unused():
    sampler = NodeSampler(2, 0, "c")
    first = sampler.choose([1, 2, 3, 4])
    # a node that was offline in round 1 is new to this campaign: it goes first when it is back
    second = sampler.choose([1, 2, 3, 4, 5])
    assert set(second) <= ({1, 2, 3, 4, 5} - set(first))
    assert sampler.choose([9]) == [9]  # only one online: it trains, whatever was used


def test_a_sample_smaller_than_the_completed_minimum_is_refused():
    with pytest.raises(ValueError, match="min_completed_nodes .3. is more than nodes_per_round .2."):
        RunSettings(nodes_per_round=2, min_completed_nodes=3)
    assert RunSettings(nodes_per_round=0, min_completed_nodes=3).nodes_per_round == 0
