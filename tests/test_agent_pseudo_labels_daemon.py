"""A real fed-agent with frames arriving in inbox/unlabeled/: the running model makes pseudo
labels of the sure ones (at most one per human label of the class), sends the rest to
review, the heartbeat and STATUS count them; `fed-agent label` and a labeled copy in the
inbox make human labels while it runs; a rollback to the version before withdraws the newer
model's pseudo labels and the older model classifies those images again."""

from __future__ import annotations

import json
import subprocess

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_harness import AGENT_BIN, AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config
from conftest import free_port, needs_agent_venv, wait_for
from fed_agent.model_store import ModelStore, models_root
from fed_common.heartbeat import Heartbeat
from fed_common.store import ImageStore
from field_models import blues, colour_model, file_photos, photo, reds, signed_model

pytestmark = needs_agent_venv
FRAMES = {f"red-{i}.png": photo((150 + 9 * i, 20, 30)) for i in range(6)} | {
    "blue.png": photo((20, 40, 230)), "grey.png": photo((128, 128, 128))}


def index(state) -> dict:
    """sha256 -> entry, as the agent's index on disk says."""
    return {e.sha256: e for e in ImageStore(state / "data").read_index().images}


def counts_seen(beats, **want) -> dict:
    """The last accepted heartbeat's image counts, once they are `want`."""
    def latest():
        for beat in reversed(beats.received):
            images = Heartbeat.model_validate_json(beat["raw"]).images
            return images if all(getattr(images, k) == v for k, v in want.items()) else None
    return wait_for(latest, 60, what=f"a heartbeat with {want}")


def start_agent(tmp_path, state, beats, notify) -> AgentProcess:
    cfg = write_config(tmp_path / "agent.yaml", state, f"127.0.0.1:{free_port()}", beats.url, token_file(tmp_path),
                       free_port(), labeling__pseudo_threshold=0.9, labeling__max_pseudo_ratio=1.0)
    return AgentProcess(cfg, notify, tmp_path / "agent.log")


def test_frames_become_pseudo_labels_or_review_items_and_a_rollback_withdraws_them(tmp_path):
    state, key = tmp_path / "state", Ed25519PrivateKey.generate()
    file_photos(state, reds(3), blues(3))  # 3 human labels a class: at most 3 pseudo labels each
    models = ModelStore(models_root(state), key.public_key())
    for version in (1, 2):  # v2 runs, v1 is kept as `previous` (a rollback needs no download)
        models.install(signed_model(key, colour_model(True), version), colour_model(True))
    beats, notify = HeartbeatServer(), NotifySocket(tmp_path / "notify.sock")
    agent = start_agent(tmp_path, state, beats, notify)
    try:
        wait_for(lambda: notify.lines("READY=1"), 30, what="READY=1")
        for name, data in FRAMES.items():
            (state / "inbox" / "unlabeled" / name).write_bytes(data)
        counts_seen(beats, pseudo=4, review=4, unlabeled=0)
        status = wait_for(lambda: [s for s in notify.lines("STATUS=") if "8 unlabeled" in s], 30,
                          what="STATUS with the unlabeled images")[-1]
        first = index(state)
        labeled_while_running(tmp_path, state, first)
        counts_seen(beats, pseudo=3, review=3)
        models.switch_to(1)  # what the updater does for a rollback to a version kept on disk
        wait_for(lambda: all(e.prediction.model_version == 1 for e in index(state).values() if e.status == "pseudo")
                 and sum(e.status == "pseudo" for e in index(state).values()) == 3, 60,
                 what="v2's pseudo labels withdrawn and made again by v1")
    finally:
        agent.stop()
        beats.close()
        notify.close()
    check_first_decisions(first)
    assert "images head 3 hardhat 3, 0 quarantined, 8 unlabeled (4 pseudo, 4 to review)" in status
    events = agent.events()
    withdrawn = [e for e in events if e["event"] == "pseudo_labels_withdrawn"]
    assert [(e["count"], e["running_version"], e["made_by"]) for e in withdrawn] == [(3, 1, [2])]
    rows = [json.loads(line) for line in (state / "predictions.jsonl").read_text().splitlines()]
    assert {r["human_label"] for r in rows} == {None} and len(rows) == len(FRAMES) + 3  # 3 classified again
    final = index(state)
    assert sum(e.status == "review" for e in final.values()) == 3  # the class-capped ones wait for a person


def check_first_decisions(first: dict) -> None:
    """v2's decisions: the sure ones pseudo-labeled up to the class cap, the rest in review."""
    entries = [e for e in first.values() if e.status != "human"]
    pseudo = sorted(e.pseudo_label for e in entries if e.status == "pseudo")
    review = sorted(e.reason.split(":")[0] for e in entries if e.status == "review")
    assert pseudo == ["hardhat", "head", "head", "head"]
    assert review == ["class cap"] * 3 + ["confidence 0.5000 below pseudo_threshold 0.9"]
    assert all(e.prediction.model_version == 2 for e in entries)


def labeled_while_running(tmp_path, state, first: dict) -> None:
    """`fed-agent label` on the review item the model was least sure of (grey: 0.5), and a
    labeled copy of a pseudo-labeled frame dropped into the inbox: both become human labels."""
    least_sure = min((e for e in first.values() if e.status == "review"), key=lambda e: e.prediction.confidence)
    proc = subprocess.run([str(AGENT_BIN / "fed-agent"), "-c", str(tmp_path / "agent.yaml"), "label",
                           str(state / "data" / least_sure.path), "hardhat"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.endswith("\thardhat\t(was review 'head' 0.50 by v2)\n")
    a_pseudo_head = next(e for e in first.values() if e.pseudo_label == "head")
    name = next(n for n, data in FRAMES.items() if (state / "data" / a_pseudo_head.path).read_bytes() == data)
    (state / "inbox" / "head" / name).write_bytes(FRAMES[name])
    wait_for(lambda: index(state)[a_pseudo_head.sha256].status == "human", 30, what="the human label to win")
    assert index(state)[least_sure.sha256].label == "hardhat"
    assert (state / "quarantine" / "head" / name).is_file()  # the dropped copy: a duplicate, kept
