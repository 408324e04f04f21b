"""The image store on a Pi: its layout, the split rule and the index the inbox writes.

Layout under the agent's state folder::

    inbox/<label>/...             photos dropped by cameras and people (the inbox reads)
    inbox/unlabeled/...           photos without a label (a camera's frames)
    data/<split>/<label>/<sha256[:16]><ext>   human-labeled images (the ClientApp trains on them)
    data/unlabeled/<sha256[:16]><ext>         images without a human label (never in a split)
    data/.index.json              one entry per stored image: sha256, label, split, size, path,
                                  status, and the model's answer for an unlabeled one
    quarantine/<label>/<name>     refused files, each next to <name>.reason.json
    cache/                        artifacts and embeddings (the ClientApp's)

The split is decided by the content hash alone (`split_for`), so an image never changes
side, whichever device or scan sees it. The agent is the only writer of the index (its
inbox, pseudo-labeler and `fed-agent label`, all through fed_agent.store_writer); the
ClientApp reads it (`ImageStore.entries`) and never writes. The index is reconciled with the
files on disk when loaded, so a crash between a move and an index write, or a deleted index,
only costs some hashing.

Why unlabeled images live apart (`data/unlabeled/`, split "unlabeled", label None): only a
person's label may decide what an image is for training and testing, so an image without one
is never in `data/train/` or `data/test/`, the folders every reader of a labeled split (the
ClientApp, the self-test) lists. What the running model said of it is kept in its entry
(`prediction`) with a status: "unlabeled" (not classified yet), "pseudo" (the model was sure
enough: a pseudo label, for training only when a campaign asks for it) or "review" (waiting
for a person, with the reason). `entries()` returns human labels only, whatever the status
of the rest. A file found in data/unlabeled/ without an entry is "unlabeled" again (it is
classified again), never a guess.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .files import atomic_write, sha256_file

SPLITS = ("train", "test")  # the labeled splits: a human label decides every image in them
UNLABELED = "unlabeled"  # data/unlabeled/ and inbox/unlabeled/: images without a human label
INDEX_NAME = ".index.json"
INDEX_VERSION = 2  # 2: unlabeled images (status, prediction); a version 1 index still loads
REASON_SUFFIX = ".reason.json"


def split_for(sha256: str, test_fraction: float) -> str:
    """'test' or 'train', from the content hash alone, so it is stable everywhere."""
    return "test" if int(sha256[:8], 16) / 2**32 < test_fraction else "train"


class StoreLayout:
    """Where each part of the agent's state lives (one place, for the daemon and its tests)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self.inbox_dir = self.state_dir / "inbox"
        self.data_dir = self.state_dir / "data"
        self.unlabeled_dir = self.data_dir / UNLABELED
        self.quarantine_dir = self.state_dir / "quarantine"
        self.cache_dir = self.state_dir / "cache"
        self.status_file = self.state_dir / "last_training.json"


Status = Literal["human", "unlabeled", "pseudo", "review"]


class StoredPrediction(BaseModel):
    """What the running model said of an unlabeled image: for a pseudo label its provenance
    (which model, how sure, when), for a review item the guess a person is shown."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    label: str
    confidence: float = Field(ge=0, le=1)
    model_version: int = Field(ge=1)
    time: str  # ISO 8601, UTC


class IndexEntry(BaseModel):
    """One stored image. `path` is relative to data/ (`train/head/0123abcd.jpg`).

    `label` is a person's label only (None: the image has none); a pseudo label is
    `prediction.label` of an entry with status "pseudo", never `label`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    label: Optional[str]
    split: Literal["train", "test", "unlabeled"]
    size: int = Field(ge=0)
    path: str
    status: Status = "human"
    prediction: Optional[StoredPrediction] = None
    reason: Optional[str] = None  # why it is in review, or why its pseudo label was withdrawn

    @model_validator(mode="after")
    def _consistent(self) -> "IndexEntry":
        human = self.status == "human"
        if human != (self.label is not None) or human != (self.split in SPLITS):
            raise ValueError("a human-labeled image has a label and a train/test split; any other has "
                             f"neither (got status {self.status!r}, label {self.label!r}, split {self.split!r})")
        if self.status in ("pseudo", "review") and self.prediction is None:
            raise ValueError(f"a {self.status} image keeps the model's prediction")
        return self

    @property
    def pseudo_label(self) -> Optional[str]:
        return self.prediction.label if self.status == "pseudo" and self.prediction else None


class StoreIndex(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1, 2] = INDEX_VERSION
    images: list[IndexEntry] = Field(default_factory=list)


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class ImageStore:
    """data/: the accepted images and their index."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.index_path = self.data_dir / INDEX_NAME

    def files_on_disk(self) -> dict[str, Path]:
        """Every stored file by its path relative to data/ (labeled splits and unlabeled/)."""
        labeled = [p for split in SPLITS for label_dir in _dirs(self.data_dir / split) for p in _files(label_dir)]
        return {p.relative_to(self.data_dir).as_posix(): p for p in labeled + _files(self.data_dir / UNLABELED)}

    def read_index(self) -> StoreIndex | None:
        """The saved index as written, or None (missing or unreadable: the caller rebuilds)."""
        try:
            return StoreIndex.model_validate_json(self.index_path.read_bytes())
        except (OSError, ValidationError, ValueError):
            return None

    def reconciled(self, saved: StoreIndex | None = None) -> dict[str, IndexEntry]:
        """sha256 -> entry for exactly the files on disk; files the index lacks are hashed."""
        on_disk = self.files_on_disk()
        index: dict[str, IndexEntry] = {}
        for entry in (saved.images if saved else []):
            if entry.path in on_disk:
                index.setdefault(entry.sha256, entry)
        known = {entry.path for entry in index.values()}
        for rel, path in sorted(on_disk.items()):
            if rel not in known:
                sha = sha256_file(path)
                index.setdefault(sha, _entry_from_path(sha, rel, path.stat().st_size))
        return index

    def write_index(self, index: dict[str, IndexEntry]) -> None:
        """The whole index, compact: one line, and no field that holds its default (an SD card
        gets it rewritten whole; a third smaller than indented JSON). Reads back the same."""
        entries = sorted(index.values(), key=lambda entry: entry.path)
        images = ",".join(entry.model_dump_json(exclude_defaults=True) for entry in entries)
        atomic_write(self.index_path, f'{{"version":{INDEX_VERSION},"images":[{images}]}}\n')

    def entries(self, split: str, labels: list[str]) -> list[IndexEntry]:
        """What training (or local testing) uses: the split's human-labeled images of these
        labels, by path (never an unlabeled, pseudo-labeled or review image).

        Read-only: the inbox owns the index. Images of a label no longer configured are left
        out (the caller names them)."""
        index = self.reconciled(self.read_index())
        return sorted((e for e in index.values()
                       if e.status == "human" and e.split == split and e.label in labels),
                      key=lambda entry: entry.path)

    def path_of(self, entry: IndexEntry) -> Path:
        return self.data_dir / entry.path


def _entry_from_path(sha: str, rel: str, size: int) -> IndexEntry:
    """The entry a file's place in data/ implies: `train/head/x.jpg` is a human label,
    `unlabeled/x.jpg` an image not classified yet."""
    if rel.startswith(UNLABELED + "/"):
        return IndexEntry(sha256=sha, label=None, split=UNLABELED, size=size, path=rel, status="unlabeled")
    split, label, _ = rel.split("/", 2)
    return IndexEntry(sha256=sha, label=label, split=split, size=size, path=rel)

