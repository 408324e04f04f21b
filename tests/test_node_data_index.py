"""The ClientApp's data rule (fedapp.node_data): a file whose embedding is cached for the round's
backbone is not read, only checked to be there with the index's size; any other file is read,
hashed against the index and checked as an image, as before. Skips are named with the reason."""

from __future__ import annotations

import io

import numpy as np
from fed_common.files import sha256_bytes
from fed_common.node_config import NodeConfig
from fed_common.store import ImageStore, IndexEntry

from fedapp.embeddings import EmbeddingCache
from fedapp.node_data import HASH_CHANGED, NOT_READ, SIZE_CHANGED, load_node_data, load_split
from test_fedapp_contracts import jpeg

LABELS = ["head", "hardhat"]
BACKBONE_SHA = "ab" * 32


def stored(data_dir, name: str, content: bytes, label: str = "head") -> IndexEntry:
    """A human-labeled train image as the inbox files and indexes it."""
    path = data_dir / "train" / label / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return IndexEntry(sha256=sha256_bytes(content), label=label, split="train", size=len(content),
                      path=f"train/{label}/{name}")


def embedded(cache: EmbeddingCache, entry: IndexEntry, value: float) -> np.ndarray:
    """A vector in the cache under the entry's hash, as the agent's embedder leaves it."""
    vec = np.full(4, value, np.float32)
    buf = io.BytesIO()
    np.save(buf, vec)
    cache.path_of(entry.sha256).write_bytes(buf.getvalue())
    return vec


def same_size_other_bytes(content: bytes) -> bytes:
    return bytes(b ^ 0xFF for b in content)  # not even an image any more, same length


def test_a_cached_entry_is_not_read_and_the_others_are_hashed_as_before(tmp_path):
    data = tmp_path / "data"
    cached_one = stored(data, "a.jpg", jpeg(1))
    fresh = stored(data, "b.jpg", jpeg(2), "hardhat")
    edited = stored(data, "c.jpg", jpeg(3))
    ImageStore(data).write_index({e.sha256: e for e in (cached_one, fresh, edited)})
    # the bogus backbone path: computing any embedding here would fail, only cached ones can be used
    cache = EmbeddingCache(tmp_path / "cache", tmp_path / "no-backbone.tflite", BACKBONE_SHA)
    vec = embedded(cache, cached_one, 0.25)
    for entry in (cached_one, edited):  # both changed in place, size kept
        path = data / entry.path
        path.write_bytes(same_size_other_bytes(path.read_bytes()))

    node = NodeConfig(data_dir=data, cache_dir=tmp_path / "cache", agent_name="pi-1")
    train, test, skipped = load_node_data(node, LABELS, cache.has)
    assert [(f.path.name, f.label) for f in train] == [("b.jpg", 1), ("a.jpg", 0)] and test == []  # by path
    by_name = {f.path.name: f for f in train}
    assert by_name["a.jpg"].data == NOT_READ  # trusted through the cache: not read
    assert by_name["b.jpg"].data == jpeg(2)  # not cached: read and checked as before
    assert [(p.rsplit("/", 1)[-1], r) for p, r in skipped] == [("c.jpg", HASH_CHANGED)]
    np.testing.assert_array_equal(cache.get(by_name["a.jpg"]), vec)
    assert (cache.reused, cache.computed) == (1, 0)

    # without the cache's word (as before this rule, and for other callers) every file is read
    _, _, skipped_all = load_node_data(node, LABELS)
    assert sorted(p.rsplit("/", 1)[-1] for p, _ in skipped_all) == ["a.jpg", "c.jpg"]


def test_a_cached_entry_whose_file_is_gone_or_resized_is_skipped_with_the_reason(tmp_path, monkeypatch):
    data = tmp_path / "data"
    grown, gone, kept = stored(data, "g.jpg", jpeg(4)), stored(data, "h.jpg", jpeg(5)), stored(data, "k.jpg", jpeg(6))
    store = ImageStore(data)
    store.write_index({e.sha256: e for e in (grown, gone, kept)})
    cache = EmbeddingCache(tmp_path / "cache", tmp_path / "no-backbone.tflite", BACKBONE_SHA)
    for entry in (grown, gone, kept):
        embedded(cache, entry, 1.0)
    (data / grown.path).write_bytes(jpeg(4) + b"more")
    # the file vanishes after the index was reconciled with the folder, before it is used
    listed = store.entries("train", LABELS)
    (data / gone.path).unlink()
    monkeypatch.setattr(ImageStore, "entries", lambda self, split, labels: listed if split == "train" else [])
    files, skipped = load_split(store, "train", LABELS, cache.has)
    assert [f.path.name for f in files] == ["k.jpg"]
    reasons = {p.rsplit("/", 1)[-1]: r for p, r in skipped}
    assert reasons["g.jpg"] == SIZE_CHANGED
    assert reasons["h.jpg"].startswith("unreadable (") and "No such file" in reasons["h.jpg"]


def test_a_cache_entry_lost_after_the_check_is_recomputed_from_the_checked_bytes(tmp_path):
    """`has` said yes, the vector is then unusable: get() reads the file and refuses bytes that
    are not the indexed ones rather than caching a wrong vector under the hash."""
    data = tmp_path / "data"
    entry = stored(data, "a.jpg", jpeg(7))
    ImageStore(data).write_index({entry.sha256: entry})
    cache = EmbeddingCache(tmp_path / "cache", tmp_path / "no-backbone.tflite", BACKBONE_SHA)
    cache.path_of(entry.sha256).write_bytes(b"corrupt")
    node = NodeConfig(data_dir=data, cache_dir=tmp_path / "cache", agent_name="pi-1")
    (item,), _, _ = load_node_data(node, LABELS, cache.has)
    (data / entry.path).write_bytes(same_size_other_bytes(jpeg(7)))
    try:
        cache.get(item)
    except ValueError as exc:
        assert "SHA-256 differs from the index" in str(exc)
    else:
        raise AssertionError("bytes that are not the indexed image were embedded")
    assert not cache.has(entry.sha256)
