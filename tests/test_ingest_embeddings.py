"""Embeddings at ingest (issue 13, item 1): the agent embeds new photos, the next round reuses them.

A real fed-coordinator (SuperLink, campaign runner) and a real fed-agent (its SuperNode, the
real ClientApp, the agent venv without TensorFlow). A first campaign leaves the backbone in the
agent's artifact store and LastTraining (with its hash) in the status file; its round 1 had to
compute every embedding. New photos dropped into the inbox afterwards (labeled ones and
unlabeled ones) are embedded by the agent's embedder, with no campaign running: their .npy
files appear under cache/emb-<backbone>/ and the agent logs `embeddings_precomputed`. The
second campaign's round 1 reply then says embeddings-computed 0 and embeddings-reused = every
image the store holds with a human label, as the coordinator's progress.jsonl records it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import PHOTOS, copy_small_dataset, needs_agent_venv, needs_shared, wait_for
from coordinator_harness import fedctl
from model_fleet import ModelFleet

pytestmark = [needs_shared, needs_agent_venv]
PER_LABEL = 4  # photos per label in each drop: short rounds
UNLABELED = 2


def _drop(inbox: Path, photos: list[Path], folder: str) -> None:
    (inbox / folder).mkdir(parents=True, exist_ok=True)
    for photo in photos:
        shutil.copy(photo, inbox / folder / photo.name)


def _filed(inbox: Path) -> bool:
    return not any(path.is_file() for path in inbox.rglob("*"))


def _campaign(fleet: ModelFleet, done_before: int) -> dict:
    assert fedctl(fleet.cfg, "run-now").returncode == 0
    rows = wait_for(lambda: (rows := fleet.fedctl("campaigns")["campaigns"]) and len(rows) > done_before
                    and rows[0]["status"] != "running" and rows, 300, what="the campaign to finish")
    assert rows[0]["status"] == "completed", rows[0]
    return rows[0]


def _round_one(fleet: ModelFleet, campaign: dict) -> dict:
    """pi-1's round-1 participant, as the ServerApp wrote it to the campaign's progress.jsonl."""
    lines = (fleet.tmp / "state" / "campaigns" / campaign["id"] / "progress.jsonl").read_text().splitlines()
    rounds = [event for event in map(json.loads, lines) if event["event"] == "round" and event["round"] == 1]
    (participant,) = rounds[0]["participants"]
    assert participant["agent"] == "pi-1"
    return participant


@pytest.fixture
def fleet(tmp_path):
    data = copy_small_dataset(tmp_path / "data", per_label=PER_LABEL)
    fleet = ModelFleet(tmp_path, ["pi-1"], data_dir=data, connect_superlink=True,
                       campaign={"rounds": 1, "local_epochs": 1, "min_nodes": 1, "min_completed_nodes": 1,
                                 "round_timeout_seconds": 120, "node_wait_seconds": 60})
    yield fleet
    fleet.stop()


def test_photos_filed_after_a_campaign_are_embedded_before_the_next(fleet):
    state = fleet.tmp / "pi-1" / "state"
    inbox, data = state / "inbox", fleet.data_dir
    wait_for(inbox.is_dir, 30, what="pi-1's inbox")
    for label in ("head", "hardhat"):
        _drop(inbox, sorted((data / "dataset_client1" / "train" / label).iterdir()), label)
    wait_for(lambda: _filed(inbox), 60, what="the first photos filed")
    wait_for(lambda: [a for a in fleet.fedctl("fleet")["agents"] if a["supernode_state"] == "connected"], 60,
             what="pi-1 connected")

    first = _round_one(fleet, _campaign(fleet, 0))
    assert (first["embeddings-computed"], first["embeddings-reused"]) == (2 * PER_LABEL, 0)  # nothing embedded yet
    backbone = json.loads((state / "last_training.json").read_text())["backbone_sha"]
    assert (state / "cache" / "artifacts" / f"{backbone}.tflite").is_file()

    for label in ("head", "hardhat"):  # new photos, labeled and not, after the campaign
        _drop(inbox, sorted((data / "dataset_client2" / "train" / label).iterdir()), label)
    _drop(inbox, sorted((PHOTOS / "dataset_client2" / "train" / "head").iterdir())[-UNLABELED:], "unlabeled")
    wait_for(lambda: _filed(inbox), 60, what="the new photos filed")
    index = json.loads((state / "data" / ".index.json").read_text())["images"]
    assert len(index) == 4 * PER_LABEL + UNLABELED
    vectors = state / "cache" / f"emb-{backbone[:16]}"
    wait_for(lambda: all((vectors / f"{e['sha256']}.npy").is_file() for e in index), 120,
             what="every stored image embedded by the agent")
    precomputed = [e for e in fleet.agents["pi-1"].events() if e.get("event") == "embeddings_precomputed"]
    assert sum(e["count"] for e in precomputed) == 2 * PER_LABEL + UNLABELED  # the new ones, each once
    assert all(e["backbone"] == backbone[:12] and e["seconds"] >= 0 for e in precomputed)

    second = _round_one(fleet, _campaign(fleet, 1))
    human = sum(1 for e in index if e.get("status", "human") == "human")
    assert (second["embeddings-computed"], second["embeddings-reused"]) == (0, human)
    assert second["num-examples"] + second["test-examples"] == human and second["skipped-files"] == 0


class _Log:
    """Collects what the embedder logs (event name and fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict]] = []

    def __getattr__(self, level):
        return lambda event, **fields: self.lines.append((event, fields))


def test_the_embedder_waits_while_a_round_is_served_gives_up_on_changed_files_and_runs_niced(tmp_path, tflite_model):
    """The worker alone (the tiny real TFLite model of conftest as the backbone): nothing while
    the SuperNode serves a message, a bounded batch a pass, a file changed since it was indexed
    not embedded (and not tried again), its thread at nice 19, and it stops promptly."""
    from fed_agent.embedder import Embedder
    from fed_common.files import sha256_bytes
    from fed_common.node_config import LastTraining
    from fed_common.store import IndexEntry

    from fedapp.artifacts import ArtifactStore
    from test_fedapp_contracts import jpeg

    data, cache = tmp_path / "data", tmp_path / "cache"
    index = {}
    for seed in range(4):
        content = jpeg(seed)
        sha = sha256_bytes(content)
        path = data / "unlabeled" / f"{sha[:16]}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        index[sha] = IndexEntry(sha256=sha, label=None, split="unlabeled", size=len(content),
                                path=f"unlabeled/{path.name}", status="unlabeled")
    changed = sorted(index.values(), key=lambda e: e.path)[-1]
    (data / changed.path).write_bytes(jpeg(9))
    backbone = sha256_bytes(tflite_model)
    ArtifactStore(cache).put(tflite_model, backbone)
    status = tmp_path / "last_training.json"
    LastTraining.now(campaign="c", run_id=1, round=1, examples=1, backbone_sha=backbone).write(status)
    serving, log = [True], _Log()
    worker = Embedder(lambda: dict(index), data, cache, status, lambda: serving[0], log, batch=2, every=0.2)
    vectors = cache / f"emb-{backbone[:16]}"

    assert worker.run_pass() is False and not list(vectors.glob("*.npy"))  # a round is being served
    serving[0] = False
    assert worker.run_pass() is True and len(list(vectors.glob("*.npy"))) == 2  # one batch, more to do
    assert worker.run_pass() is False  # the last good one, and the changed one given up
    assert {p.stem for p in vectors.glob("*.npy")} == set(index) - {changed.sha256}
    assert [f["file"] for e, f in log.lines if e == "embedding_not_precomputed"] == [changed.path]
    assert [f["count"] for e, f in log.lines if e == "embeddings_precomputed"] == [2, 1]
    assert worker.run_pass() is False and worker.computed == 3  # nothing left, the changed one not retried

    for vector in vectors.glob("*.npy"):
        vector.unlink()
    worker.start()
    wait_for(lambda: len(list(vectors.glob("*.npy"))) == 3, 30, what="the thread to embed")
    stat = Path(f"/proc/self/task/{worker.native_id}/stat").read_text()
    assert int(stat.rsplit(")", 1)[1].split()[16]) == 19  # field 19 of proc(5): nice
    worker.stop()
    worker.join(5)
    assert not worker.is_alive()
