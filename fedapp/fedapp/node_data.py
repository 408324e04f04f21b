"""What a node trains on: exactly the images its inbox stored, checked again before use.

Why through `fed_common.store.ImageStore`: the inbox decides what is stored (and the
split, by hash), and the ClientApp must train on that and nothing else. The store index is
reconciled with the files on disk (files it lacks are hashed), so a plain
`data/<split>/<label>/` folder without an index works too (the local fleet and the tests
use such folders).

What is read, per index entry (`cached`: is this SHA-256 embedded already for the round's
backbone, `EmbeddingCache.has`):
- embedded already: the file is not read, only stat'ed: it must still exist with the size
  the index gives. Why: the agent embeds each image at ingest (fed_agent.embedder), so
  re-reading, re-hashing and re-decoding hundreds of photos every round would only confirm
  what the inbox checked when it stored them; the vector is keyed by the hash the inbox
  computed from the bytes, so it is the image the index names. A file that is gone is
  skipped as unreadable, one whose size differs as changed: named, never silently dropped.
  (A same-size edit in place is not noticed this way: the store's files are the agent's,
  written once under their hash, never edited.)
- not embedded yet (or no `cached` given: every entry): the file is read once and checked on
  the bytes actually used: a file whose content no longer matches its index hash, or that is
  not an image (the one `fed_common.images` check), is skipped and named with the reason.

Pseudo labels (`load_pseudo_labeled`, read only when a campaign sets use_pseudo_labels) are
training data only: they come from data/unlabeled/, never from a split, so the local test set
stays the human-labeled test split alone. Every image the index marks "pseudo" is used,
whichever model version made the label: the agent withdraws the pseudo labels of a model
that was rolled back (fed_agent.pseudo_labels), so what remains was made by the running model
or one the fleet ran before it, each above the agent's threshold and under its class cap; a
human label always replaces a pseudo one (the image then leaves data/unlabeled/).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from fed_common.files import sha256_bytes
from fed_common.images import image_problem
from fed_common.node_config import NodeConfig
from fed_common.store import UNLABELED, ImageStore, IndexEntry

from .images import LabeledFile, unknown_label_folders

Skipped = tuple[str, str]  # (file or folder, reason)
HASH_CHANGED = "content changed since the inbox stored it (SHA-256 differs from the index)"
PSEUDO_OUTSIDE = f"a pseudo label outside {UNLABELED}/ (only images without a human label have one)"
SIZE_CHANGED = "content changed since the inbox stored it (size differs from the index)"
NOT_READ = b""  # the bytes of a file not read: its embedding is cached (EmbeddingCache.get)
Cached = Optional[Callable[[str], bool]]  # sha256 -> embedded already? (None: read every file)


def _usable(path: Path, expected_sha: str) -> tuple[bytes | None, str | None]:
    """(bytes, None) for a file to use, else (None, why not)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"unreadable ({exc.strerror or exc})"
    if sha256_bytes(data) != expected_sha:
        return None, HASH_CHANGED
    problem = image_problem(data)
    return (None, problem) if problem else (data, None)


def _still_there(path: Path, expected_size: int) -> Optional[str]:
    """None if the file exists with the index's size, else why not (one stat, no read)."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None if size == expected_size else SIZE_CHANGED


def _take(store: ImageStore, entry: IndexEntry, label: int, cached: Cached) -> tuple[LabeledFile | None, str | None]:
    """(the file to use, None) or (None, why not), reading the file only when not cached."""
    path = store.path_of(entry)
    if cached is not None and cached(entry.sha256):
        reason = _still_there(path, entry.size)
        return (None, reason) if reason else (LabeledFile(path, label, NOT_READ, entry.sha256), None)
    data, reason = _usable(path, entry.sha256)
    return (None, reason or "unusable") if data is None else (LabeledFile(path, label, data, entry.sha256), None)


def load_split(store: ImageStore, split: str, labels: list[str], cached: Cached = None
               ) -> tuple[list[LabeledFile], list[Skipped]]:
    """The split's usable images of these labels (in path order) and what was skipped."""
    files: list[LabeledFile] = []
    skipped: list[Skipped] = unknown_label_folders(store.data_dir / split, labels)
    for entry in store.entries(split, labels):
        item, reason = _take(store, entry, labels.index(entry.label), cached)
        if item is None:
            skipped.append((str(store.path_of(entry)), reason or "unusable"))
            continue
        files.append(item)
    return files, skipped


def load_pseudo_labeled(node: NodeConfig, labels: list[str], cached: Cached = None
                        ) -> tuple[list[LabeledFile], list[Skipped]]:
    """The store's pseudo-labeled images of these labels (target: the pseudo label), by path,
    and what was skipped. Read-only, like everything the ClientApp reads."""
    store = ImageStore(node.data_dir)
    index = store.reconciled(store.read_index())
    chosen = sorted((e for e in index.values() if e.pseudo_label in labels), key=lambda e: e.path)
    files: list[LabeledFile] = []
    skipped: list[Skipped] = []
    for entry in chosen:
        inside = entry.path.startswith(UNLABELED + "/")
        item, reason = _take(store, entry, labels.index(entry.pseudo_label), cached) if inside \
            else (None, PSEUDO_OUTSIDE)
        if item is None:
            skipped.append((str(store.path_of(entry)), reason or "unusable"))
            continue
        files.append(item)
    return files, skipped


def load_node_data(node: NodeConfig, labels: list[str], cached: Cached = None
                   ) -> tuple[list[LabeledFile], list[LabeledFile], list[Skipped]]:
    """(train files, local test files, skipped) from the node's image store; read-only.
    `cached`: files whose embedding is cached are not read (the module's docstring)."""
    store = ImageStore(node.data_dir)
    train_files, train_skipped = load_split(store, "train", labels, cached)
    test_files, test_skipped = load_split(store, "test", labels, cached)
    return train_files, test_files, train_skipped + test_skipped
