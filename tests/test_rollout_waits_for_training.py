"""No switch during training: a new model that arrives while a train message is served waits.

A real fed-coordinator (SuperLink, campaign, rollout) and a real fed-agent (SuperNode) with
photos in its store; the campaign's ClientApp is the real one with a slow train step
(tests/slow_client.py marks when a train message starts and ends). v2 becomes champion
while the train message runs: the agent's heartbeat keeps reporting v1 and the agent logs
that the update waits for training; it switches to v2 only after the message was answered.
"""

from __future__ import annotations

import shutil
import time
from datetime import datetime

import pytest

from conftest import copy_small_dataset, flower_app_with_client, needs_agent_venv, needs_shared, wait_for
from coordinator_harness import fedctl
from model_fleet import ModelFleet, register
from slow_client import SLOW_SECONDS

pytestmark = [needs_shared, needs_agent_venv]


@pytest.fixture
def training_fleet(tmp_path):
    data = copy_small_dataset(tmp_path / "data", per_label=6)
    app = flower_app_with_client(tmp_path / "app", "slow_client")
    fleet = ModelFleet(tmp_path, ["pi-1"], data_dir=data, connect_superlink=True, canary_minutes=0,
                       campaign={"app_dir": str(app), "rounds": 1, "local_epochs": 1, "min_nodes": 1,
                                 "round_timeout_seconds": 120, "node_wait_seconds": 60})
    inbox = tmp_path / "pi-1" / "state" / "inbox"
    wait_for(inbox.is_dir, 30, what="pi-1's inbox")
    for label_dir in (data / "dataset_client1" / "train").iterdir():
        (inbox / label_dir.name).mkdir(exist_ok=True)
        for photo in label_dir.iterdir():
            shutil.copy(photo, inbox / label_dir.name / photo.name)
    wait_for(lambda: not any(path.is_file() for path in inbox.rglob("*")), 60, what="the photos filed")
    yield fleet
    fleet.stop()


def test_a_new_model_waits_until_the_train_message_is_answered(training_fleet, tflite_model, tmp_path):
    fleet = training_fleet
    marks = tmp_path / "pi-1" / "state"
    v1, v2 = register(fleet.registry, tflite_model), register(fleet.registry, tflite_model)
    assert fedctl(fleet.cfg, "promote", str(v1)).returncode == 0
    fleet.wait_running("pi-1", v1)
    fleet.wait_rollout(v1, "complete")

    assert fedctl(fleet.cfg, "run-now").returncode == 0
    wait_for(lambda: (marks / "train-started").exists(), 180, what="a train message being served")
    assert fedctl(fleet.cfg, "promote", str(v2)).returncode == 0
    wait_for(lambda: any(e.get("event") == "model_update_waits_for_training" and e.get("desired") == v2
                         for e in fleet.agents["pi-1"].events()), 30, what="the update to wait for training")
    while not (marks / "train-done").exists():  # all through the train message: still v1
        assert fleet.running_model("pi-1")["version"] == v1
        assert fleet.current_folder("pi-1") == "v0001"
        assert time.time() - float((marks / "train-started").read_text()) < SLOW_SECONDS + 120
        time.sleep(0.5)

    fleet.wait_running("pi-1", v2, timeout=60)
    done = float((marks / "train-done").read_text())
    switched = [e for e in fleet.agents["pi-1"].events() if e.get("event") == "model_switched"
                and e.get("version") == v2]
    assert len(switched) == 1
    assert datetime.fromisoformat(switched[0]["timestamp"].replace("Z", "+00:00")).timestamp() >= done
    campaign = wait_for(lambda: (rows := fleet.fedctl("campaigns")["campaigns"]) and rows[0]["status"] != "running"
                        and rows[0], 180, what="the campaign to finish")
    assert campaign["status"] == "completed", campaign  # the training it waited for was not disturbed
