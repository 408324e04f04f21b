"""Per agent, which labels training used and what images wait (issue 11, item 5): the readers.

A coordinator state holds two agents' heartbeats (images by status: human, pseudo, review,
unlabeled) and a campaign whose rounds were recorded from the ServerApp's own round events
(fedapp.progress, with each participant's human and pseudo label counts, read back the way
the campaign runner reads progress.jsonl). Then every reader an operator uses must show
them: `fedctl fleet` (table and --json), `fedctl campaigns` and `--follow` (the real
command line), /metrics and the status page.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading

import pytest

from conftest import REPO
from fed_coordinator.state import State
from fedapp.progress import Participant, RoundEvent, event_json
from test_api_heartbeat import GOOD

FEDCTL = str(REPO / ".venv" / "bin" / "fedctl")
IMAGES = {"pi-1": {"labels": {"head": {"train": 50, "test": 10}, "hardhat": {"train": 48, "test": 12}},
                   "pseudo": 30, "review": 12, "unlabeled": 4},
          "pi-2": {"labels": {"head": {"train": 3, "test": 0}, "hardhat": {"train": 2, "test": 0}}}}
PI1_TEXT = "120 human, 30 pseudo, 12 review, 4 unlabeled"
PI2_TEXT = "5 human, 0 pseudo, 0 review, 0 unlabeled"
ROUND_LABELS = "pi-1 98 human + 30 pseudo, pi-2 5 human + 0 pseudo"


def participant(agent: str, human: int, pseudo: int) -> Participant:
    return Participant.model_validate({"agent": agent, "node_id": 1, "bytes_up": 1000,
                                       "num-examples": human + pseudo // 2, "human-examples": human,
                                       "pseudo-examples": pseudo, "train-loss": 0.2})


def recorded(event: RoundEvent) -> dict:
    """The event as the runner hands it to State.round_recorded (campaigns.runner.read_events)."""
    return json.loads(event_json(event))


@pytest.fixture
def state_dir(tmp_path):
    state = State(tmp_path / "coordinator.db")
    for name, images in IMAGES.items():
        state.add_agent(name)
        state.heartbeat(name, json.dumps({**GOOD, "agent": name, "images": images}), "127.0.0.1")
    state.campaign_started("c1", "run-now", None)
    state.round_recorded("c1", recorded(RoundEvent(round=0, server_accuracy=0.5, server_loss=0.7)))
    state.round_recorded("c1", recorded(RoundEvent(
        round=1, server_accuracy=0.96, server_loss=0.1, sent_to=2, failed=0, timed_out=0,
        participants=[participant("pi-1", 98, 30), participant("pi-2", 5, 0)])))
    state.close()
    return tmp_path


def fedctl(state_dir, *args) -> str:
    out = subprocess.run([FEDCTL, "--state-dir", str(state_dir), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_fedctl_fleet_shows_each_agents_images_by_status(state_dir):
    table = {line.split()[0]: line for line in fedctl(state_dir, "fleet").splitlines()[1:]}
    assert PI1_TEXT in table["pi-1"] and PI2_TEXT in table["pi-2"]
    agents = {a["name"]: a for a in json.loads(fedctl(state_dir, "--json", "fleet"))["agents"]}
    assert agents["pi-1"]["image_status"] == {"human": 120, "pseudo": 30, "review": 12, "unlabeled": 4}
    assert agents["pi-2"]["image_status"] == {"human": 5, "pseudo": 0, "review": 0, "unlabeled": 0}
    assert agents["pi-1"]["images"]["labels"]["head"] == {"train": 50, "test": 10}


def test_fedctl_campaigns_shows_per_agent_the_labels_each_round_used(state_dir):
    lines = fedctl(state_dir, "campaigns").splitlines()
    assert "LABELS" in lines[0] and ROUND_LABELS in lines[1]
    (campaign,) = json.loads(fedctl(state_dir, "--json", "campaigns"))["campaigns"]
    assert campaign["rounds"][0]["agents"] == []
    assert campaign["rounds"][1]["agents"] == [
        {"agent": "pi-1", "examples": 113, "human": 98, "pseudo": 30},
        {"agent": "pi-2", "examples": 5, "human": 5, "pseudo": 0}]


def test_fedctl_campaigns_follow_prints_each_round_with_its_labels(state_dir):
    follow = subprocess.Popen([FEDCTL, "--state-dir", str(state_dir), "campaigns", "--follow"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(60, follow.kill)  # a fedctl that never prints fails, never hangs
    watchdog.start()
    try:
        lines = [follow.stdout.readline() for _ in range(3)]  # blocks until fedctl prints them
        assert lines[0].strip() == "following campaign c1"
        assert lines[2].strip() == f"round 1: server accuracy 0.960 (2 agents: {ROUND_LABELS})"
        state = State(state_dir / "coordinator.db")
        state.campaign_finished("c1", "completed", "", 1)
        state.close()
        assert follow.wait(60) == 0
        assert follow.stdout.read().strip() == "campaign c1 completed"
    finally:
        watchdog.cancel()
        if follow.poll() is None:
            follow.kill()
            follow.wait()


def test_a_round_line_from_a_clientapp_that_does_not_report_labels():
    from fed_coordinator.fedctl.campaigns import _round_line

    line = _round_line({"round": 3, "server_accuracy": 0.9, "participants": 1,
                        "agents": [{"agent": "pi-9", "examples": 40, "human": None, "pseudo": None}]})
    assert line == "round 3: server accuracy 0.900 (1 agents: pi-9 40 examples)"


def test_metrics_have_a_gauge_per_agent_and_status(state_dir):
    from fed_coordinator.api.metrics import metrics_text

    lines = metrics_text(State(state_dir / "coordinator.db"), 1e9).splitlines()
    for status, count in (("human", 120), ("pseudo", 30), ("review", 12), ("unlabeled", 4)):
        assert f'fed_agent_images{{agent="pi-1",status="{status}"}} {count:.1f}' in lines, status
    assert 'fed_agent_images{agent="pi-2",status="pseudo"} 0.0' in lines


def test_status_page_shows_images_by_status_and_the_labels_of_the_last_round(state_dir):
    from fed_coordinator.api.status_page import status_page_html
    from fed_coordinator.config import MonitoringSection

    page = status_page_html(State(state_dir / "coordinator.db"), 1e9, MonitoringSection())
    rows = dict(re.findall(r'<tr class="agent" data-agent="([^"]+)">(.*?)</tr>', page))
    assert f'<td class="images">head 60, hardhat 60<br>{PI1_TEXT}</td>' in rows["pi-1"]
    assert f"<br>{PI2_TEXT}</td>" in rows["pi-2"]
    assert f'<td class="labels">{ROUND_LABELS}</td>' in page

