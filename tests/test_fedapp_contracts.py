"""The contracts fedapp shares with other processes: the run config the coordinator submits,
the round config the ServerApp sends, the progress lines the coordinator reads, and, the one
that matters most, that the ClientApp trains on exactly the images the agent's inbox stored."""

from __future__ import annotations

import io
import json
import shutil
import tomllib
from pathlib import Path

import pytest
from fed_common.files import sha256_bytes, sha256_file
from fed_common.node_config import NodeConfig
from fed_common.store import SPLITS, ImageStore, IndexEntry, StoreLayout
from flwr.app import ConfigRecord
from PIL import Image

from conftest import PHOTOS, REPO
from fedapp.client_app import load_node_data
from fedapp.node_data import HASH_CHANGED
from fedapp.progress import (ArtifactsShipped, CompletedEvent, FailedEvent, Participant, Progress,
                             RoundEvent, StartedEvent, parse_event, read_progress)
from fedapp.run_config import RunConfig, TrainConfig

LABELS = ["head", "hardhat"]
SHA = "ab" * 32
needs_photos = pytest.mark.skipif(not (PHOTOS / "dataset_client1" / "train").is_dir(),
                                  reason=f"needs the shared photos under {PHOTOS}")


def jpeg(seed: int, size: tuple[int, int] = (80, 64)) -> bytes:
    img = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, 90))
    buf = io.BytesIO()
    img.save(buf, "JPEG")
    return buf.getvalue()


# -- run config and round config ---------------------------------------------------------

def test_pyproject_app_config_is_the_run_config_defaults():
    pyproject = tomllib.loads((REPO / "fedapp" / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == RunConfig().to_flwr()


def test_run_config_round_trips_and_names_what_is_wrong():
    cfg = RunConfig(labels=["a", "b", "c"], rounds=3, learning_rate=0.05, output_dir="/srv/out")
    assert RunConfig.from_flwr(cfg.to_flwr()) == cfg
    assert cfg.to_flwr()["num-server-rounds"] == 3 and cfg.to_flwr()["labels"] == "a,b,c"
    with pytest.raises(ValueError, match="num-rounds"):
        RunConfig.from_flwr({**cfg.to_flwr(), "num-rounds": 3})
    with pytest.raises(ValueError, match=r"local[-_]epochs"):
        RunConfig.from_flwr({**cfg.to_flwr(), "local-epochs": 0})


def test_train_config_round_trips_through_a_flower_record():
    cfg = TrainConfig(labels=LABELS, local_epochs=2, batch_size=8, learning_rate=0.01, momentum=0.9,
                      seed=3, campaign="c1", backbone_sha=SHA, trainer_sha=SHA, server_round=4)
    record = ConfigRecord(cfg.to_record())
    assert record["server-round"] == 4 and record["backbone-sha"] == SHA
    assert TrainConfig.from_record(record) == cfg
    with pytest.raises(ValueError, match="learning-rates"):
        TrainConfig.from_record({**cfg.to_record(), "learning-rates": 0.1})
    with pytest.raises(ValueError, match="momentum"):
        TrainConfig.from_record({**cfg.to_record(), "momentum": 1.5})


# -- progress.jsonl ----------------------------------------------------------------------

def sample_events() -> list:
    participant = Participant.model_validate({
        "agent": "pi-1", "node_id": 9, "bytes_up": 657_000, "skipped": [["/d/x.jpg", "empty file"]],
        "num-examples": 24, "train-loss": 0.3, "train-accuracy": 0.9, "test-accuracy": 0.8,
        "test-examples": 8, "skipped-files": 1, "embed-seconds": 1.5, "train-seconds": 2.5})
    return [
        StartedEvent(nodes=2, artifacts=ArtifactsShipped(shas={"backbone": SHA, "trainer": SHA},
                                                         shipped_bytes={"9": 1000})),
        RoundEvent(round=0, server_accuracy=0.5, server_loss=0.7),
        RoundEvent(round=1, server_accuracy=0.9, server_loss=0.2, sent_to=2, bytes_down_per_agent=657_000,
                   participants=[participant], failed=0, timed_out=1, bytes_up_per_agent=657_000,
                   shipped_bytes={"9": 9_500_000}),
        FailedEvent(reason="round 2: 0 node(s) completed training"),
        CompletedEvent(rounds=4, converged_round=2, reason="converged at round 2: ..."),
    ]


def test_progress_events_round_trip_with_the_field_names_the_coordinator_reads(tmp_path):
    path = tmp_path / "progress.jsonl"
    events = sample_events()
    for event in events:
        Progress(path).emit(event)
    assert read_progress(path, 0) == (events, path.stat().st_size)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["started", "round", "round", "failed", "completed"]
    assert lines[0]["artifacts"]["shas"]["backbone"] == SHA and lines[0]["nodes"] == 2
    assert set(lines[1]) == {"event", "time", "round", "server_accuracy", "server_loss", "participants", "failures"}
    round1 = lines[2]
    assert {"sent_to", "bytes_down_per_agent", "bytes_up_per_agent", "failed", "timed_out"} <= set(round1)
    assert round1["participants"][0]["num-examples"] == 24
    assert round1["participants"][0]["skipped"] == [["/d/x.jpg", "empty file"]]
    assert round1["shipped_bytes"] == {"9": 9_500_000}  # artifacts go out within round 1
    assert lines[4]["rounds"] == 4 and lines[4]["converged_round"] == 2  # early stopping
    assert parse_event(path.read_text().splitlines()[2]) == events[2]


def test_garbage_is_skipped_and_a_partial_line_waits(tmp_path):
    path = tmp_path / "progress.jsonl"
    first, second = CompletedEvent(rounds=1), FailedEvent(reason="x")
    Progress(path).emit(first)
    with open(path, "a") as fh:
        fh.write("not json at all\n")
        fh.write('{"event": "round", "round": "soon"}\n')
        fh.write('{"event": "teleported"}\n')
        fh.write(second.model_dump_json()[:10])  # the ServerApp is mid-write
    events, offset = read_progress(path, 0)
    assert events == [first]
    assert offset == path.stat().st_size - 10
    with open(path, "a") as fh:
        fh.write(second.model_dump_json()[10:] + "\n")
    assert read_progress(path, offset) == ([second], path.stat().st_size)
    assert read_progress(tmp_path / "missing.jsonl", 5) == ([], 5)


# -- the ClientApp's data ----------------------------------------------------------------

def loaded_set(train_files, test_files) -> set:
    return {(str(f.path), LABELS[f.label], split, f.digest)
            for split, files in (("train", train_files), ("test", test_files)) for f in files}


@needs_photos
def test_client_app_trains_on_exactly_what_the_inbox_stored(tmp_path):
    from fed_agent.inbox import Inbox

    layout = StoreLayout(tmp_path / "state")
    source_sha = {}
    for label in LABELS:
        folder = layout.inbox_dir / label
        folder.mkdir(parents=True)
        for photo in sorted((PHOTOS / "dataset_client1" / "train" / label).iterdir())[:8]:
            shutil.copy(photo, folder / photo.name)
            source_sha[(label, photo.name)] = sha256_file(photo)
    good = next((layout.inbox_dir / "hardhat").iterdir()).read_bytes()
    (layout.inbox_dir / "head" / "broken.jpg").write_bytes(good[: len(good) // 3])
    (layout.inbox_dir / "head" / "again.jpg").write_bytes(good)  # hardhat/ is filed first: a duplicate
    (layout.inbox_dir / "hardhat" / "notes.jpg").write_text("not a photo")

    report = Inbox(layout.state_dir, LABELS, min_width=32, min_height=32, test_fraction=0.3,
                   settle_seconds=0).ingest()
    quarantined = {Path(src).name for src, _ in report.quarantined}
    assert quarantined == {"broken.jpg", "again.jpg", "notes.jpg"}
    accepted = {(dest, Path(dest).parent.name, Path(dest).parent.parent.name,
                 source_sha[(Path(src).parent.name, Path(src).name)]) for src, dest in report.accepted}
    store = ImageStore(layout.data_dir)
    stored = {(str(store.path_of(e)), e.label, e.split, e.sha256)
              for split in SPLITS for e in store.entries(split, LABELS)}

    node = NodeConfig(data_dir=layout.data_dir, cache_dir=layout.cache_dir, agent_name="pi-1")
    train_files, test_files, skipped = load_node_data(node, LABELS)
    assert loaded_set(train_files, test_files) == stored == accepted
    assert len(accepted) == len(source_sha) and {s for _, _, s, _ in accepted} == {"train", "test"}
    assert skipped == []
    assert all(sha256_bytes(f.data) == f.digest for f in train_files + test_files)
    assert not any(layout.quarantine_dir in f.path.parents for f in train_files + test_files)


def test_client_app_skips_by_name_what_changed_or_is_not_an_image(tmp_path):
    data = tmp_path / "data"
    store = ImageStore(data)
    index = {}
    for seed, (split, label) in enumerate([("train", "head"), ("train", "hardhat"), ("test", "head"),
                                           ("train", "head")]):
        content = jpeg(seed)
        path = data / split / label / f"{sha256_bytes(content)[:16]}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        entry = IndexEntry(sha256=sha256_bytes(content), label=label, split=split,
                           size=len(content), path=path.relative_to(data).as_posix())
        index[entry.sha256] = entry
    store.write_index(index)
    changed = store.path_of(sorted(index.values(), key=lambda e: e.path)[-1])
    changed.write_bytes(jpeg(99))  # replaced after the inbox indexed it
    (data / "train" / "hardhat" / "dropped-in.jpg").write_text("not a photo")  # not via the inbox
    (data / "train" / "cats").mkdir()
    (data / "train" / "cats" / "c.jpg").write_bytes(jpeg(5))

    node = NodeConfig(data_dir=data, cache_dir=tmp_path / "cache", agent_name="pi-1")
    train_files, test_files, skipped = load_node_data(node, LABELS)
    reasons = {Path(p).name: r for p, r in skipped}
    assert set(reasons) == {changed.name, "dropped-in.jpg", "cats"}
    assert reasons[changed.name] == HASH_CHANGED
    assert "not a readable image" in reasons["dropped-in.jpg"]
    assert "unknown label folder" in reasons["cats"]
    assert len(train_files) == 2 and len(test_files) == 1
    assert {(LABELS[f.label], f.digest) for f in train_files + test_files} == {
        (e.label, e.sha256) for e in index.values() if store.path_of(e) != changed}
