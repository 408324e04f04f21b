"""`nodes_per_round` through real Flower: every node has a turn, a dead one does not stall."""

import pytest

from conftest import WEIGHTS, copy_small_dataset, needs_agent_venv, needs_shared
from fed_coordinator.config import CampaignSection
from fed_demo.local_fleet import local_fleet

pytestmark = [needs_shared, needs_agent_venv]
ROUND_TIMEOUT = 60
NODE_WAIT = 15


@pytest.fixture
def small_data(tmp_path):
    return copy_small_dataset(tmp_path / "data", per_label=8)


def sampled(small_data, **overrides) -> CampaignSection:
    fields = dict(server_data_dir=small_data / "dataset_server", weights=str(WEIGHTS), rounds=2,
                  local_epochs=2, nodes_per_round=2, min_nodes=3, min_completed_nodes=1,
                  node_wait_seconds=NODE_WAIT, early_stop_patience=0,
                  round_timeout_seconds=ROUND_TIMEOUT, deadline_seconds=600)
    return CampaignSection(**{**fields, **overrides})


def test_sampled_rounds_use_every_node_and_a_dead_one_does_not_stall(tmp_path, small_data):
    nodes = [("pi-1", small_data / "dataset_client1"), ("pi-2", small_data / "dataset_client2"),
             ("pi-3", small_data / "dataset_client1")]
    with local_fleet(small_data, tmp_path / "state", nodes=nodes) as fleet:
        # a stable fleet of 3, 2 a round: within ceil(3 / 2) = 2 rounds every node trained
        stable = fleet.runner.run(sampled(small_data, node_wait_seconds=120))
        assert stable.status == "completed", stable.reason
        rounds = [r for r in stable.rounds if r["round"] > 0]
        assert [r["sent_to"] for r in rounds] == [2, 2]
        assert all(len(r["participants"]) == 2 for r in rounds)
        assert {p["agent"] for r in rounds for p in r["participants"]} == {"pi-1", "pi-2", "pi-3"}
        pi3 = next(p["node_id"] for r in rounds for p in r["participants"] if p["agent"] == "pi-3")

        def on_event(event):
            if event["event"] == "round" and event["round"] == 0:
                fleet.nodes[2].stop(sig=9)  # all three were online; pi-3 dies (its whole process tree)

        outcome = fleet.runner.run(sampled(small_data), on_event)
    assert outcome.status == "completed", outcome.reason
    by_round = {r["round"]: r for r in outcome.rounds}
    # the SuperLink still counted pi-3 online for a while: it was sampled in round 1 or 2 (every
    # node within 2 rounds), never answered, and that round went on with the other sampled node
    lost = [r for r in outcome.rounds if r["round"] > 0
            and (any(f["node_id"] == pi3 for f in r["failures"]) or r["timed_out"] == 1)]
    assert len(lost) >= 1, outcome.rounds
    for rnd in lost:
        assert len(rnd["participants"]) == 1 and rnd["participants"][0]["agent"] in ("pi-1", "pi-2")
        took = rnd["time"] - by_round[rnd["round"] - 1]["time"]
        # at the latest the round's deadline (plus the wait for nodes), never the campaign's
        assert took < NODE_WAIT + ROUND_TIMEOUT + 20, f"round {rnd['round']} took {took:.0f}s"
    assert outcome.model_version is not None
