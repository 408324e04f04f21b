"""The image store on a Pi: its layout, the split rule and the index the inbox writes.

Layout under the agent's state folder::

    inbox/<label>/...             photos dropped by cameras and people (the inbox reads)
    data/<split>/<label>/<sha256[:16]><ext>   accepted images (the ClientApp trains on them)
    data/.index.json              one entry per stored image: sha256, label, split, size, path
    quarantine/<label>/<name>     refused files, each next to <name>.reason.json
    cache/                        artifacts and embeddings (the ClientApp's)

The split is decided by the content hash alone (`split_for`), so an image never changes
side, whichever device or scan sees it. The inbox is the only writer of the index; the
ClientApp reads it (`ImageStore.entries`) and never writes. The index is reconciled with the
files on disk when loaded, so a crash between a move and an index write, or a deleted index,
only costs some hashing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .files import atomic_write, sha256_file

SPLITS = ("train", "test")
INDEX_NAME = ".index.json"
INDEX_VERSION = 1
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
        self.quarantine_dir = self.state_dir / "quarantine"
        self.cache_dir = self.state_dir / "cache"
        self.status_file = self.state_dir / "last_training.json"


class IndexEntry(BaseModel):
    """One stored image. `path` is relative to data/ (`train/head/0123abcd.jpg`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    label: str
    split: Literal["train", "test"]
    size: int = Field(ge=0)
    path: str


class StoreIndex(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Literal[1] = INDEX_VERSION
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
        """Every stored file by its path relative to data/."""
        return {p.relative_to(self.data_dir).as_posix(): p for split in SPLITS
                for label_dir in _dirs(self.data_dir / split) for p in _files(label_dir)}

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
                split, label, _ = rel.split("/", 2)
                sha = sha256_file(path)
                index.setdefault(sha, IndexEntry(sha256=sha, label=label, split=split,
                                                 size=path.stat().st_size, path=rel))
        return index

    def write_index(self, index: dict[str, IndexEntry]) -> None:
        entries = sorted(index.values(), key=lambda entry: entry.path)
        atomic_write(self.index_path, StoreIndex(images=entries).model_dump_json(indent=1) + "\n")

    def entries(self, split: str, labels: list[str]) -> list[IndexEntry]:
        """What training (or local testing) uses: the split's images of these labels, by path.

        Read-only: the inbox owns the index. Images of a label no longer configured are left
        out (the caller names them)."""
        index = self.reconciled(self.read_index())
        return sorted((e for e in index.values() if e.split == split and e.label in labels),
                      key=lambda entry: entry.path)

    def path_of(self, entry: IndexEntry) -> Path:
        return self.data_dir / entry.path

