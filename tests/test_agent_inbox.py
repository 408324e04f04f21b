"""The agent's inbox: good photos are filed by a stable split, everything else is quarantined
with a reason, and no user file is ever deleted or overwritten."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from fed_agent.inbox import Inbox, IngestReport
from fed_common.store import ImageStore, IndexEntry, split_for

NOW = 1_700_000_000.0  # the fake clock; files are dated an hour before unless a test says otherwise
LABELS = ["head", "hardhat"]


def jpeg(seed: int = 0, size: tuple[int, int] = (96, 80)) -> bytes:
    """A small JPEG whose bytes depend on seed (so different seeds are different images)."""
    img = Image.new("RGB", size, (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256))
    img.putpixel((seed % size[0], 0), (255 - seed % 256, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def drop(state: Path, rel: str, data: bytes, mtime: float = NOW - 3600) -> Path:
    path = state / "inbox" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def make_inbox(state: Path, **kw) -> Inbox:
    return Inbox(state, LABELS, clock=lambda: NOW, **kw)


def all_files(state: Path) -> dict[str, bytes]:
    """Content of every file under state_dir except our own bookkeeping (index, reasons)."""
    out = {}
    for path in state.rglob("*"):
        if path.is_file() and path.name != ".index.json" and not path.name.endswith(".reason.json"):
            out[str(path.relative_to(state))] = path.read_bytes()
    return out


def reason_of(dest: Path) -> dict:
    return json.loads(dest.with_name(dest.name + ".reason.json").read_text())


def test_creates_folders_people_drop_into(tmp_path):
    make_inbox(tmp_path)
    for label in LABELS:
        assert (tmp_path / "inbox" / label).is_dir()
        assert (tmp_path / "data" / "train" / label).is_dir()
        assert (tmp_path / "data" / "test" / label).is_dir()
    assert (tmp_path / "quarantine").is_dir()


def test_good_jpeg_filed_by_stable_split(tmp_path):
    inbox = make_inbox(tmp_path, test_fraction=0.5)
    seen_splits = set()
    for seed in range(12):
        data = jpeg(seed)
        src = drop(tmp_path, f"head/IMG_{seed}.JPG", data)
        report = inbox.ingest()
        sha = hashlib.sha256(data).hexdigest()
        split = "test" if int(sha[:8], 16) / 2**32 < 0.5 else "train"
        dest = tmp_path / "data" / split / "head" / f"{sha[:16]}.jpg"
        assert report.accepted == [(str(src), str(dest))] and report.quarantined == []
        assert dest.read_bytes() == data and not src.exists()
        assert split_for(sha, 0.5) == split
        seen_splits.add(split)
    assert seen_splits == {"train", "test"}  # the rule really splits (12 images, p=0.5)


def test_same_content_twice_is_a_duplicate(tmp_path):
    inbox = make_inbox(tmp_path)
    data = jpeg(1)
    drop(tmp_path, "head/a.jpg", data)
    (_, stored), = inbox.ingest().accepted
    rel = Path(stored).relative_to(tmp_path).as_posix()
    src = drop(tmp_path, "hardhat/b.jpg", data)
    report = inbox.ingest()
    assert report.accepted == []
    assert report.quarantined == [(str(src), f"duplicate of {rel}")]
    note = reason_of(tmp_path / "quarantine" / "hardhat" / "b.jpg")
    assert note["reason"] == f"duplicate of {rel}" and note["sha256"] == hashlib.sha256(data).hexdigest()


def test_duplicate_within_one_scan(tmp_path):
    inbox = make_inbox(tmp_path)
    drop(tmp_path, "head/a.jpg", jpeg(2))
    drop(tmp_path, "head/b.jpg", jpeg(2))
    report = inbox.ingest()
    assert len(report.accepted) == 1
    assert report.quarantined[0][0].endswith("b.jpg") and report.quarantined[0][1].startswith("duplicate of data/")


def bad_inputs() -> list[tuple[str, bytes, str, str]]:
    """(inbox path, bytes, quarantine folder, expected reason prefix)."""
    good = jpeg(3)
    return [
        ("head/truncated.jpg", good[: len(good) // 2], "head", "not a readable image ("),
        ("head/empty.jpg", b"", "head", "empty file"),
        ("head/notes.jpg", b"this is not an image\n" * 5, "head", "not a readable image (unknown format)"),
        ("head/big.jpg", jpeg(4, (600, 600)), "head", "file too large ("),
        ("hardhat/tiny.jpg", jpeg(5, (20, 40)), "hardhat", "image too small (20x40 < min 64x64)"),
        ("helmet/h.jpg", jpeg(6), "helmet", "unknown label 'helmet' (labels: head, hardhat)"),
        ("loose.jpg", jpeg(7), "_unlabeled", "not in a label folder"),
    ]


@pytest.mark.parametrize("rel,data,folder,reason", bad_inputs(), ids=[b[0] for b in bad_inputs()])
def test_bad_input_is_quarantined_with_reason(tmp_path, rel, data, folder, reason):
    max_bytes = 6000
    assert rel != "head/big.jpg" or len(data) > max_bytes
    inbox = make_inbox(tmp_path, max_bytes=max_bytes)
    src = drop(tmp_path, rel, data)
    report = inbox.ingest()
    assert report.accepted == []
    assert [s for s, _ in report.quarantined] == [str(src)]
    got = report.quarantined[0][1]
    assert got.startswith(reason), got
    if rel == "head/big.jpg":
        assert got == f"file too large ({len(data)} bytes > max {max_bytes})"
    assert not re.search(r"0x[0-9a-fA-F]{6,}", got)  # no object addresses: the same file always gives the same reason
    dest = tmp_path / "quarantine" / folder / Path(rel).name
    assert dest.read_bytes() == data and not src.exists()
    note = reason_of(dest)
    assert note["source"] == str(src) and note["reason"] == got and note["time"].startswith("2023-11-14T")
    expected_sha = None if rel == "head/big.jpg" else hashlib.sha256(data).hexdigest()
    assert note["sha256"] == expected_sha


def test_nothing_is_ever_deleted(tmp_path):
    inbox = make_inbox(tmp_path, max_bytes=6000)
    dropped = [drop(tmp_path, rel, data) for rel, data, _, _ in bad_inputs()]
    dropped += [drop(tmp_path, f"head/ok{i}.jpg", jpeg(10 + i)) for i in range(3)]
    dropped.append(drop(tmp_path, "hardhat/again.jpg", jpeg(10)))  # a duplicate
    contents = sorted(p.read_bytes() for p in dropped)
    report = inbox.ingest()
    assert len(report.accepted) == 3 and len(report.quarantined) == len(dropped) - 3
    assert sorted(all_files(tmp_path).values()) == contents
    assert not any(p.exists() for p in dropped)
    assert inbox.counts()["quarantined"] == len(dropped) - 3


def test_incomplete_and_fresh_files_wait(tmp_path):
    clock = [NOW]
    inbox = Inbox(tmp_path, LABELS, clock=lambda: clock[0], settle_seconds=2.0)
    hidden = drop(tmp_path, "head/.IMG_1.jpg", jpeg(20))
    part = drop(tmp_path, "head/IMG_2.jpg.part", jpeg(21))
    tmp = drop(tmp_path, "head/IMG_3.TMP", jpeg(22))
    fresh = drop(tmp_path, "head/IMG_4.jpg", jpeg(23), mtime=NOW - 1)
    report = inbox.ingest()
    assert report == IngestReport()
    assert all(p.exists() for p in (hidden, part, tmp, fresh))
    assert inbox.counts()["pending"] == 1  # only the fresh one will ever be taken
    clock[0] = NOW + 5  # it has settled now
    report = inbox.ingest()
    assert [s for s, _ in report.accepted] == [str(fresh)]
    assert all(p.exists() for p in (hidden, part, tmp))


def test_counts(tmp_path):
    inbox = make_inbox(tmp_path, test_fraction=0.5)
    shas = []
    for seed in range(6):
        data = jpeg(30 + seed)
        shas.append(hashlib.sha256(data).hexdigest())
        drop(tmp_path, f"{LABELS[seed % 2]}/{seed}.jpg", data)
    drop(tmp_path, "head/empty.jpg", b"")
    drop(tmp_path, "head/wait.jpg", jpeg(40), mtime=NOW)
    inbox.ingest()
    expected = {label: {"train": 0, "test": 0} for label in LABELS}
    for seed, sha in enumerate(shas):
        expected[LABELS[seed % 2]][split_for(sha, 0.5)] += 1
    assert inbox.counts() == {"labels": expected, "quarantined": 1, "pending": 1,
                              "pseudo": 0, "review": 0, "unlabeled": 0}


def test_store_entries_are_exactly_the_accepted_files(tmp_path):
    """What the ClientApp trains and tests on (ImageStore.entries) is what the inbox accepted:
    same paths, labels, splits, hashes of the stored bytes and sizes; refused files are not in it."""
    inbox = make_inbox(tmp_path, test_fraction=0.5)
    for seed in range(8):
        drop(tmp_path, f"{LABELS[seed % 2]}/IMG_{seed}.jpg", jpeg(60 + seed))
    drop(tmp_path, "head/again.jpg", jpeg(60))  # a duplicate: quarantined
    drop(tmp_path, "hardhat/empty.jpg", b"")
    report = inbox.ingest()
    assert len(report.accepted) == 8 and len(report.quarantined) == 2
    data_dir = tmp_path / "data"
    expected = []
    for source, dest in report.accepted:
        stored = Path(dest)
        rel = stored.relative_to(data_dir)
        sha = hashlib.sha256(stored.read_bytes()).hexdigest()
        expected.append(IndexEntry(sha256=sha, label=Path(source).parent.name, split=rel.parts[0],
                                   size=stored.stat().st_size, path=rel.as_posix()))
    store = ImageStore(data_dir)
    got = store.entries("train", LABELS) + store.entries("test", LABELS)
    assert sorted(got, key=lambda e: e.path) == sorted(expected, key=lambda e: e.path)
    assert {e.split for e in got} == {"train", "test"}  # both sides are really exercised
    assert all(e.split == split_for(e.sha256, 0.5) for e in got)


def test_index_survives_restart_and_is_rebuilt(tmp_path):
    data = jpeg(50)
    drop(tmp_path, "head/a.jpg", data)
    make_inbox(tmp_path).ingest()
    index_path = tmp_path / "data" / ".index.json"
    index = json.loads(index_path.read_text())
    assert [entry["sha256"] for entry in index["images"]] == [hashlib.sha256(data).hexdigest()]
    assert index["images"][0]["label"] == "head" and index["images"][0]["size"] == len(data)

    drop(tmp_path, "head/b.jpg", data)
    assert make_inbox(tmp_path).ingest().quarantined[0][1].startswith("duplicate of data/")

    index_path.unlink()
    inbox = make_inbox(tmp_path)
    assert json.loads(index_path.read_text()) == index  # rebuilt by hashing the store
    drop(tmp_path, "head/c.jpg", data)
    assert inbox.ingest().quarantined[0][1].startswith("duplicate of data/")

    index_path.write_text("{not json")
    make_inbox(tmp_path)
    assert json.loads(index_path.read_text()) == index


def test_quarantine_name_collision_gets_a_suffix(tmp_path):
    inbox = make_inbox(tmp_path)
    contents = [b"", b"not an image", b"still not"]
    for data in contents:
        drop(tmp_path, "head/photo.jpg", data)
        inbox.ingest()
    qdir = tmp_path / "quarantine" / "head"
    names = ["photo.jpg", "photo-1.jpg", "photo-2.jpg"]
    assert [(qdir / n).read_bytes() for n in names] == contents
    assert all((qdir / (n + ".reason.json")).is_file() for n in names)
