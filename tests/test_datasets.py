"""Tests for datasets/synth.py and datasets/split_folder.py.

The modules live in a plain folder (not a package, and ``datasets`` would clash with the
Hugging Face package name), so they are loaded by file path under unique module names.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
REAL = Path("/work/shared/datasets/dataset_client1/train")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"fl_datasets_{name}", ROOT / "datasets" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


synth = _load("synth")
sf = _load("split_folder")
LABELS = ("head", "hardhat")


def tree_hash(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and mtime-independent)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def images_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def synth_src(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "src"
    synth.generate(out, per_label=20, size=96, seed=1)
    return out


# ---------------------------------------------------------------- synth

def test_synth_counts_sizes_and_decode(tmp_path):
    summary = synth.generate(tmp_path / "a", per_label=5, size=64, seed=3)
    assert summary["counts"] == {"head": 5, "hardhat": 5}
    for label in LABELS:
        files = sorted((tmp_path / "a" / label).glob("*.jpg"))
        assert len(files) == 5
        for f in files:
            with Image.open(f) as im:
                im.load()
                assert im.format == "JPEG" and im.size == (64, 64) and im.mode == "RGB"


def test_synth_deterministic(tmp_path):
    synth.generate(tmp_path / "a", per_label=4, size=80, seed=7)
    synth.generate(tmp_path / "b", per_label=4, size=80, seed=7)
    synth.generate(tmp_path / "c", per_label=4, size=80, seed=8)
    a, b, c = (tree_hash(tmp_path / x) for x in "abc")
    assert a == b and len(a) == 8
    assert a.keys() == c.keys() and a != c


def test_synth_refuses_non_empty_out(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match=str(tmp_path)):
        synth.generate(tmp_path, per_label=1, size=64)


def test_synth_cli(tmp_path, capsys):
    assert synth.main([str(tmp_path / "o"), "--per-label", "2", "--size", "48", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"head": 2, "hardhat": 2}


# ---------------------------------------------------------------- split: IID

def test_split_iid_every_image_exactly_once(synth_src, tmp_path):
    before = tree_hash(synth_src)
    summary = sf.split_folder(synth_src, tmp_path / "out", clients=2, seed=0)
    out = tmp_path / "out"
    after = tree_hash(synth_src)
    assert before == after  # source untouched

    copied = images_under(out)
    assert len(copied) == len(before) == summary["total"] == 40
    # names are kept, and each name appears once, under its original label
    src_pairs = sorted((Path(k).parts[0], Path(k).name) for k in before)
    out_pairs = sorted((p.parent.name, p.name) for p in copied)
    assert src_pairs == out_pairs
    # bytes preserved
    for p in copied:
        assert p.read_bytes() == (synth_src / p.parent.name / p.name).read_bytes()

    assert {d.name for d in out.iterdir()} == {"dataset_client1", "dataset_client2", "dataset_server"}
    assert {d.name for d in (out / "dataset_server").iterdir()} == {"test"}
    for client in ("dataset_client1", "dataset_client2"):
        for split in ("train", "test"):
            for label in LABELS:
                n = len(list((out / client / split / label).iterdir()))
                assert n >= 1 and summary["counts"][client][split][label] == n
    for label in LABELS:
        assert len(list((out / "dataset_server" / "test" / label).iterdir())) == 2  # 10% of 20
        # IID deals round-robin: client shares differ by at most one image
        shares = [len(list((out / c).glob(f"*/{label}/*"))) for c in ("dataset_client1", "dataset_client2")]
        assert abs(shares[0] - shares[1]) <= 1


def test_split_deterministic(synth_src, tmp_path):
    for mode in ("iid", "skewed"):
        sf.split_folder(synth_src, tmp_path / f"{mode}1", seed=5, mode=mode)
        sf.split_folder(synth_src, tmp_path / f"{mode}2", seed=5, mode=mode)
        sf.split_folder(synth_src, tmp_path / f"{mode}3", seed=6, mode=mode)
        assert tree_hash(tmp_path / f"{mode}1") == tree_hash(tmp_path / f"{mode}2")
        assert tree_hash(tmp_path / f"{mode}1").keys() != tree_hash(tmp_path / f"{mode}3").keys()


def test_split_more_clients_and_no_server(synth_src, tmp_path):
    summary = sf.split_folder(synth_src, tmp_path / "o", clients=4, server_fraction=0)
    assert not (tmp_path / "o" / "dataset_server").exists()
    assert set(summary["counts"]) == {f"dataset_client{i}" for i in range(1, 5)}
    assert len(images_under(tmp_path / "o")) == 40


# ---------------------------------------------------------------- split: skewed

def test_split_skewed_majorities(synth_src, tmp_path):
    summary = sf.split_folder(synth_src, tmp_path / "o", mode="skewed", labels=list(LABELS), skew=0.8)
    c = summary["counts"]
    assert c["dataset_client1"]["train"]["head"] > c["dataset_client1"]["train"]["hardhat"]
    assert c["dataset_client2"]["train"]["hardhat"] > c["dataset_client2"]["train"]["head"]
    for client in ("dataset_client1", "dataset_client2"):  # minority label still present
        assert min(c[client]["train"].values()) >= 1
    assert len(images_under(tmp_path / "o")) == 40
    # label order decides who favours what
    rev = sf.split_folder(synth_src, tmp_path / "r", mode="skewed", labels=["hardhat", "head"])
    assert rev["counts"]["dataset_client1"]["train"]["hardhat"] > rev["counts"]["dataset_client1"]["train"]["head"]


# ---------------------------------------------------------------- split: errors and skipping

def test_refuses_non_empty_out(synth_src, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.jpg").write_bytes(b"x")
    with pytest.raises(sf.SplitError, match="not empty") as e:
        sf.split_folder(synth_src, out)
    assert str(out) in str(e.value)
    assert [p.name for p in out.iterdir()] == ["old.jpg"]
    sf.split_folder(synth_src, tmp_path / "empty_ok")  # a fresh folder is fine
    (tmp_path / "empty").mkdir()
    sf.split_folder(synth_src, tmp_path / "empty")     # so is an existing empty one


def test_refuses_src_without_label_folders(tmp_path):
    src = tmp_path / "flat"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"x")
    with pytest.raises(sf.SplitError, match="no label folders") as e:
        sf.split_folder(src, tmp_path / "out")
    assert str(src) in str(e.value)
    with pytest.raises(sf.SplitError, match="does not exist"):
        sf.split_folder(tmp_path / "missing", tmp_path / "out2")


def test_refuses_too_few_images_naming_label(synth_src, tmp_path):
    src = tmp_path / "src"
    for label, n in (("head", 10), ("rare_label", 2)):
        (src / label).mkdir(parents=True)
        for i in range(n):
            (src / label / f"{i}.jpg").write_bytes(b"x")
    with pytest.raises(sf.SplitError, match="rare_label"):
        sf.split_folder(src, tmp_path / "out", clients=2)  # needs 2 clients + server = 3
    assert not (tmp_path / "out").exists()  # nothing written on failure
    sf.split_folder(src, tmp_path / "out3", clients=2, server_fraction=0)  # 2 suffices without server


def test_non_image_files_skipped_with_warning(synth_src, tmp_path, capsys):
    src = tmp_path / "src"
    for label in LABELS:
        (src / label).mkdir(parents=True)
        for f in sorted((synth_src / label).iterdir()):
            (src / label / f.name).write_bytes(f.read_bytes())
    (src / "head" / "notes.txt").write_text("not an image")
    (src / "README.txt").write_text("top-level file")
    summary = sf.split_folder(src, tmp_path / "out")
    err = capsys.readouterr().err
    assert "notes.txt" in err and "README.txt" in err and "warning" in err
    assert not any(p.suffix == ".txt" for p in images_under(tmp_path / "out"))
    assert summary["total"] == 40 and len(summary["skipped"]) == 2
    assert (src / "head" / "notes.txt").exists()


def test_split_layout_source_is_merged(tmp_path):
    src = tmp_path / "src"
    for split, n in (("train", 8), ("test", 3)):
        for label in LABELS:
            (src / split / label).mkdir(parents=True)
            for i in range(n):
                (src / split / label / f"{split}{i}.jpg").write_bytes(f"{split}{label}{i}".encode())
    summary = sf.split_folder(src, tmp_path / "out")
    assert summary["total"] == 22 and sorted(summary["labels"]) == sorted(LABELS)
    assert len(images_under(tmp_path / "out")) == 22


def test_cli_json_and_error_exit(synth_src, tmp_path, capsys):
    assert sf.main([str(synth_src), str(tmp_path / "o"), "--clients", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == 40 and "dataset_server" in data["counts"]
    assert sf.main([str(synth_src), str(tmp_path / "o")]) == 2
    assert "not empty" in capsys.readouterr().err


# ---------------------------------------------------------------- real photos (not in the repo)

@pytest.mark.skipif(not REAL.is_dir(), reason=f"real photo folder {REAL} not present")
def test_split_real_folder(tmp_path):
    before = tree_hash(REAL)
    expected = {label: len([p for p in (REAL / label).iterdir() if p.suffix.lower() in sf.IMAGE_EXTS])
                for label in LABELS}
    summary = sf.split_folder(REAL, tmp_path / "out", clients=2, labels=list(LABELS))
    assert tree_hash(REAL) == before
    per_label = {label: sum(splits.get(label, 0) for folder in summary["counts"].values()
                            for splits in folder.values()) for label in LABELS}
    assert per_label == expected
    assert summary["total"] == sum(expected.values()) == len(images_under(tmp_path / "out"))
