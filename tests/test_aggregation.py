"""No single node spoils a round: reply checks, robust aggregation, the champion floor.

The unit tests drive fedapp.aggregation directly; the campaign tests run the real ServerApp
through a real SuperLink and three real SuperNodes on loopback, one of which runs a ClientApp
that misbehaves on purpose (tests/faulty_client.py, wrapping the real one).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

from conftest import WEIGHTS, copy_small_dataset, flower_app_with_client, needs_agent_venv, needs_shared
from fedapp.aggregation import Aggregation, ReplyRejected, aggregate, array_specs, check_reply
from fedapp.head import head_record, init_head

SENT = head_record(init_head(0))
SPECS = array_specs(SENT)


def reply(arrays: dict | None = None, examples=10, metrics: bool = True) -> RecordDict:
    values = arrays if arrays is not None else {n: a.numpy() for n, a in SENT.items()}
    content = RecordDict({"arrays": ArrayRecord({n: Array(np.ascontiguousarray(v)) for n, v in values.items()})})
    if metrics:
        content["metrics"] = MetricRecord({"num-examples": examples, "train-loss": 0.5})
    return content


def with_array(name: str, value) -> dict:
    values = {n: a.numpy() for n, a in SENT.items()}
    values[name] = value
    return values


BAD_REPLIES = {
    "nan": (lambda: reply(with_array("b0", np.full(128, np.nan, np.float32))), "array 'b0' has 128 non-finite"),
    "inf": (lambda: reply(with_array("w1", np.full((128, 2), np.inf, np.float32))), "array 'w1' has 256 non-finite"),
    "shape": (lambda: reply(with_array("b1", np.zeros(3, np.float32))), "array 'b1' is float32[3], sent float32[2]"),
    "dtype": (lambda: reply(with_array("b1", np.zeros(2, np.float64))), "array 'b1' is float64[2], sent float32[2]"),
    "missing array": (lambda: reply({n: a.numpy() for n, a in SENT.items() if n != "w0"}), "array names"),
    "extra array": (lambda: reply(with_array("w9", np.zeros(1, np.float32))), "array names"),
    "no metrics": (lambda: reply(metrics=False), "no MetricRecord 'metrics'"),
    "zero examples": (lambda: reply(examples=0), "'num-examples' = 0 is outside 1..1000"),
    "negative examples": (lambda: reply(examples=-5), "'num-examples' = -5 is outside"),
    "huge examples": (lambda: reply(examples=10**12), "'num-examples' = 1000000000000 is outside"),
    "float examples": (lambda: reply(examples=3.5), "'num-examples' must be an integer"),
}


@pytest.mark.parametrize("case", sorted(BAD_REPLIES))
def test_a_bad_reply_is_rejected_with_a_reason_that_names_it(case):
    make, words = BAD_REPLIES[case]
    with pytest.raises(ReplyRejected, match=re.escape(words)):
        check_reply(make(), SPECS, max_examples=1000)


def test_a_good_reply_passes_and_fedavg_weights_by_examples():
    good = [check_reply(reply(with_array("b1", np.full(2, v, np.float32)), examples=n), SPECS, 1000)
            for v, n in ((1.0, 30), (4.0, 10))]
    arrays, metrics = aggregate(good, Aggregation.FEDAVG)
    assert arrays["b1"].numpy().tolist() == [1.75, 1.75] and arrays["b1"].numpy().dtype == np.float32
    assert list(arrays) == ["w0", "b0", "w1", "b1"] and metrics["num-examples"] == 40


@pytest.mark.parametrize("method", [Aggregation.TRIMMED_MEAN, Aggregation.MEDIAN])
def test_robust_aggregation_ignores_one_outlier_of_three(method):
    replies = [check_reply(reply(with_array("b1", np.full(2, v, np.float32)), examples=n), SPECS, 1000)
               for v, n in ((1.0, 10), (2.0, 10), (500.0, 1000))]
    robust = aggregate(replies, method)[0]["b1"].numpy()
    plain = aggregate(replies, Aggregation.FEDAVG)[0]["b1"].numpy()
    assert robust.tolist() == [2.0, 2.0] and plain[0] > 400


# --- through real Flower -------------------------------------------------------------------

@pytest.fixture(scope="module")
def poisoned_fleet(tmp_path_factory):
    """pi-1 and pi-2 honest, evil-3 (a copy of pi-1's photos) running the faulty ClientApp."""
    from fed_demo.local_fleet import local_fleet

    root = tmp_path_factory.mktemp("poisoned")
    data = copy_small_dataset(root / "data", per_label=20)
    shutil.copytree(data / "dataset_client1", data / "dataset_client3")
    nodes = [("pi-1", data / "dataset_client1"), ("pi-2", data / "dataset_client2"),
             ("evil-3", data / "dataset_client3")]
    with local_fleet(data, root / "state", nodes=nodes, app_dir=flower_app_with_client(root / "app", "faulty_client")) as fleet:
        yield fleet, data


def settings(data: Path, **overrides):
    from fed_coordinator.config import CampaignSection

    return CampaignSection(server_data_dir=data / "dataset_server", weights=str(WEIGHTS), local_epochs=10,
                           min_nodes=3, min_completed_nodes=2, node_wait_seconds=60,
                           round_timeout_seconds=120, deadline_seconds=900, **overrides)


@needs_shared
@needs_agent_venv
def test_each_bad_reply_fails_only_that_node_and_the_campaign_completes(poisoned_fleet):
    from faulty_client import FAULTS

    fleet, data = poisoned_fleet
    # every fault gets its round: early stopping off (on these photos the loss settles by round 3)
    outcome = fleet.runner.run(settings(data, rounds=len(FAULTS), early_stop_patience=0), cid="faults-night")
    assert outcome.status == "completed", outcome.reason
    rounds = {r["round"]: r for r in outcome.rounds if r["round"] > 0}
    for number, (fault, words) in enumerate(FAULTS.items(), start=1):
        played = rounds[number]
        assert sorted(p["agent"] for p in played["participants"]) == ["pi-1", "pi-2"], (fault, played)
        assert played["failed"] == 1 and played["failures"][0]["agent"] == "evil-3", (fault, played)
        assert words in played["failures"][0]["reason"], (fault, played["failures"])
    assert rounds[len(FAULTS)]["server_accuracy"] >= 0.9, rounds[len(FAULTS)]


@needs_shared
@needs_agent_venv
def test_robust_aggregation_withstands_a_boosted_label_flip_that_fedavg_follows(poisoned_fleet):
    fleet, data = poisoned_fleet
    accuracy = {}
    for method in ("fedavg", "trimmed_mean", "median"):
        outcome = fleet.runner.run(settings(data, rounds=1, aggregation=method), cid=f"boost-{method}")
        assert outcome.status == "completed", (method, outcome.reason)
        last = outcome.rounds[-1]
        assert len(last["participants"]) == 3 and not last["failures"], (method, last)  # well-formed replies
        accuracy[method] = last["server_accuracy"]
    # For comparison (not an attack on this head): plain x100 keeps a ReLU MLP's argmax, so
    # FedAvg then follows evil-3's own trained head. Printed for the record.
    plain = fleet.runner.run(settings(data, rounds=1), cid="scale-fedavg")
    print(f"[aggregation] server accuracy after one round with evil-3 poisoning: boosted label flip "
          f"{accuracy}; plain x100 under fedavg {plain.rounds[-1]['server_accuracy'] if plain.rounds else None}")
    assert accuracy["fedavg"] < 0.9, accuracy
    assert accuracy["trimmed_mean"] >= 0.9 and accuracy["median"] >= 0.9, accuracy
