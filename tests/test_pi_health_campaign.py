"""A hot Pi declines its train messages; the campaign completes with the other one.

A real fed-coordinator (SuperLink, campaign runner, API) and two real fed-agents with photos
in their stores, the real ClientApp. Both agents have a healthy fake `vcgencmd` on PATH;
pi-b's thermal folder reads 84.0 °C, above training.max_temp_c (80.0 by default). Every round
pi-b declines with the reason, the ServerApp counts it as declined, not failed, and the
campaign completes on pi-a's training. The campaign record keeps who declined and why, and
pi-b's heartbeat carries the decline into fedctl fleet, fedctl campaigns and /metrics.
"""

from __future__ import annotations

import shutil
import urllib.request

import pytest

from conftest import copy_small_dataset, needs_agent_venv, needs_shared, wait_for
from coordinator_harness import fedctl
from model_fleet import ModelFleet
from pi_fakes import FakeVcgencmd, thermal_dir

pytestmark = [needs_shared, needs_agent_venv]
HOT = "84.0 °C >= training.max_temp_c 80.0"


def _health(folder, celsius: float) -> dict:
    return {"health__thermal_dir": str(thermal_dir(folder, celsius)),
            "health__throttled_file": "/nonexistent/get_throttled"}


def _fill_inbox(fleet: ModelFleet, agent: str, photos) -> None:
    inbox = fleet.tmp / agent / "state" / "inbox"
    wait_for(inbox.is_dir, 30, what=f"{agent}'s inbox")
    for label_dir in photos.iterdir():
        (inbox / label_dir.name).mkdir(exist_ok=True)
        for photo in label_dir.iterdir():
            shutil.copy(photo, inbox / label_dir.name / photo.name)
    wait_for(lambda: not any(path.is_file() for path in inbox.rglob("*")), 60, what=f"{agent}'s photos filed")


@pytest.fixture
def fleet(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", FakeVcgencmd(tmp_path / "pi", 0x0).path_env())  # both Pis: throttled=0x0
    data = copy_small_dataset(tmp_path / "data", per_label=6)
    fleet = ModelFleet(tmp_path, ["pi-a"], data_dir=data, connect_superlink=True,
                       campaign={"rounds": 2, "local_epochs": 1, "min_nodes": 2, "min_completed_nodes": 1,
                                 "round_timeout_seconds": 120, "node_wait_seconds": 60},
                       agent_settings=_health(tmp_path / "thermal-a", 45.0))
    fleet.agent_settings = _health(tmp_path / "thermal-b", 84.0)
    fleet.add_agent("pi-b")
    _fill_inbox(fleet, "pi-a", data / "dataset_client1" / "train")
    _fill_inbox(fleet, "pi-b", data / "dataset_client2" / "train")
    yield fleet
    fleet.stop()


def test_a_hot_pi_declines_and_the_campaign_completes_with_the_other(fleet):
    wait_for(lambda: all((a.get("pi_health") or {}).get("max_temp_c") == 80.0 and a["supernode_state"] == "connected"
                         for a in fleet.fedctl("fleet")["agents"]) and len(fleet.fedctl("fleet")["agents"]) == 2,
             60, what="both agents connected")
    assert fedctl(fleet.cfg, "run-now").returncode == 0
    campaign = wait_for(lambda: (rows := fleet.fedctl("campaigns")["campaigns"]) and rows[0]["status"] != "running"
                        and rows[0], 300, what="the campaign to finish")
    assert campaign["status"] == "completed", campaign
    trained = [rnd for rnd in campaign["rounds"] if rnd["round"] >= 1]  # round 0 is the initial head
    assert len(trained) == 2
    for rnd in trained:
        assert [a["agent"] for a in rnd["agents"]] == ["pi-a"] and rnd["failures"] == [], rnd
        assert [(d["agent"], d["reason"]) for d in rnd["declines"]] == [("pi-b", HOT)], rnd
    assert campaign["declined"] == f"pi-b declined round 1, 2: {HOT}"

    declined = f"declined training ({campaign['id']} round 2): {HOT}"
    agents = wait_for(lambda: {a["name"]: a for a in fleet.fedctl("fleet")["agents"]
                               if a["name"] != "pi-b" or (a["pi_health"] or {}).get("last_decline")}, 30,
                      what="pi-b's heartbeat with its decline")
    assert len(agents) == 2  # (other checks, the clock's, may add their own problems)
    assert not [p for p in agents["pi-a"]["problems"] if "°C" in p or "declined" in p or "throttl" in p]
    problems = agents["pi-b"]["problems"]
    assert HOT in problems and problems.index(declined) == problems.index(HOT) + 1, problems
    assert agents["pi-b"]["pi_health"]["last_decline"]["reason"] == HOT
    assert declined in fedctl(fleet.cfg, "fleet").stdout  # the problem column of the table
    status = [s for s in fleet.sockets["pi-b"].lines("STATUS=") if declined in s]
    assert status and f"{HOT}; {declined}; " in status[-1], status[-1:]
    with urllib.request.urlopen(f"http://127.0.0.1:{fleet.api_port}/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert 'fed_agent_training_declined{agent="pi-b"} 1.0' in metrics
    assert 'fed_agent_training_declined{agent="pi-a"} 0.0' in metrics
    assert 'fed_agent_cpu_temperature_celsius{agent="pi-b"} 84.0' in metrics

