"""The device's image inbox: photos in, checked, then filed for training or quarantined.

Contract (for camera programs and people):

* Drop a labeled image into ``<state_dir>/inbox/<label>/`` (one folder per configured
  label; the agent creates them). Sub-folders inside a label folder are fine.
* Write under a name that starts with ``.`` or ends in ``.part``/``.tmp`` and rename it
  when complete: such names are ignored. A file modified less than ``settle_seconds``
  ago is left for the next scan, in case its writer is not done yet.
* Each scan decodes every waiting file with Pillow (JPEG, PNG, WebP, BMP, GIF, TIFF).
  A good image is MOVED to ``data/<split>/<label>/<sha256[:16]><ext>``; ``split`` is
  ``test`` iff ``int(sha256[:8], 16) / 2**32 < test_fraction``, so an image never
  changes side, whichever device or scan sees it.
* Anything else (empty, too large, unreadable, too small, unknown label folder, file
  loose in ``inbox/``, or the same content as an image already stored) is MOVED to
  ``quarantine/<label or _unlabeled>/<original name>`` (``name-1.jpg`` etc. if taken)
  next to ``<that name>.reason.json`` saying why: {"source", "reason", "time", "sha256"}
  (sha256 is null for a file too large to read).
* Nothing is ever deleted or overwritten; moves stay inside state_dir (os.replace).

Why a full SHA-256 index (``data/.index.json``) and not just the file-name prefix: the
duplicate check must be exact, and it must survive restarts. The index is reconciled with
the files in the store at start-up (files hashed if missing from it), so a crash between
a move and the index update, or a deleted index, only costs some hashing.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Optional

import structlog
from fed_common.files import atomic_write, sha256_bytes
from fed_common.images import image_problem
from fed_common.store import REASON_SUFFIX, SPLITS, ImageStore, IndexEntry, StoreLayout, split_for

__all__ = ["Inbox", "IngestReport", "is_ignored", "split_for"]
UNLABELED = "_unlabeled"
_LABEL = re.compile(r"^[A-Za-z0-9_-]+$")

log = structlog.get_logger()


def is_ignored(name: str) -> bool:
    """Names a writer uses while a file is incomplete (and hidden files): never touched."""
    return name.startswith(".") or name.lower().endswith((".part", ".tmp"))


@dataclass
class IngestReport:
    """What one scan did: (source, destination) accepted and (source, reason) quarantined."""

    accepted: list[tuple[str, str]] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)


class Inbox:
    """Turns ``<state_dir>/inbox`` into a deduplicated, split image store under ``data/``."""

    def __init__(self, state_dir: Path, labels: list[str], *, min_width: int = 64, min_height: int = 64,
                 max_bytes: int = 20_000_000, test_fraction: float = 0.2, settle_seconds: float = 2.0,
                 clock: Callable[[], float] = time.time) -> None:
        bad = [label for label in labels if not isinstance(label, str) or not _LABEL.match(label)]
        if bad or len(set(labels)) != len(labels) or not labels:
            raise ValueError(f"labels must be unique names of letters, digits, '_' or '-' (got {labels!r})")
        if not 0 <= test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1) (got {test_fraction!r})")
        if min(min_width, min_height, max_bytes) < 1 or settle_seconds < 0:
            raise ValueError(f"min_width, min_height, max_bytes must be >= 1 and settle_seconds >= 0 (got "
                             f"{min_width}, {min_height}, {max_bytes}, {settle_seconds})")
        self.state_dir = Path(state_dir)
        self.labels = list(labels)
        self.min_width, self.min_height, self.max_bytes = min_width, min_height, max_bytes
        self.test_fraction, self.settle_seconds, self._clock = test_fraction, settle_seconds, clock
        layout = StoreLayout(self.state_dir)
        self.inbox_dir, self.data_dir, self.quarantine_dir = layout.inbox_dir, layout.data_dir, layout.quarantine_dir
        self.store = ImageStore(self.data_dir)
        self._make_dirs()
        self._index: dict[str, IndexEntry] = self._load_index()

    def _make_dirs(self) -> None:
        # Made up front (and again each scan) so a person sees where to drop photos.
        for label in self.labels:
            (self.inbox_dir / label).mkdir(parents=True, exist_ok=True)
            for split in SPLITS:
                (self.data_dir / split / label).mkdir(parents=True, exist_ok=True)
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ scanning

    def ingest(self) -> IngestReport:
        """Process every settled file waiting in the inbox; one bad file never stops the scan."""
        report, now = IngestReport(), self._clock()
        self._make_dirs()
        try:
            for path, folder in self._waiting():
                try:
                    self._ingest_one(path, folder, now, report)
                except FileNotFoundError:
                    continue  # taken away by someone else between listing and moving
                except OSError as exc:
                    log.error("inbox_file_error", file=str(path), error=str(exc))
        finally:
            if report.accepted:
                self.store.write_index(self._index)
        return report

    def counts(self) -> dict:
        """Stored images per label and split, quarantined files, and files still waiting."""
        stored = Counter((entry.label, entry.split) for entry in self._index.values())
        labels = {label: {split: stored[(label, split)] for split in SPLITS} for label in self.labels}
        quarantined = sum(1 for _, _, names in os.walk(self.quarantine_dir) for n in names
                          if not n.startswith(".") and not n.endswith(REASON_SUFFIX))
        return {"labels": labels, "quarantined": quarantined, "pending": sum(1 for _ in self._waiting())}

    def _waiting(self) -> Iterator[tuple[Path, Optional[str]]]:
        """(file, its top-level folder in inbox/ or None if loose), in a stable order."""
        for entry in sorted(self.inbox_dir.iterdir()):
            if is_ignored(entry.name):
                continue
            if not entry.is_dir() or entry.is_symlink():
                yield entry, None
                continue
            for root, dirs, names in os.walk(entry):
                dirs[:] = sorted(d for d in dirs if not is_ignored(d))
                for name in sorted(names):
                    if not is_ignored(name):
                        yield Path(root) / name, entry.name

    def _ingest_one(self, path: Path, folder: Optional[str], now: float, report: IngestReport) -> None:
        st = path.lstat()
        if now - st.st_mtime < self.settle_seconds:
            return  # maybe still being written: next scan
        sha: Optional[str] = None
        reason: Optional[str] = None
        if stat.S_ISLNK(st.st_mode):
            reason = "symbolic link (copy the image itself into the inbox)"
        elif not stat.S_ISREG(st.st_mode):
            reason = "not a regular file"
        else:
            data = b""
            if st.st_size <= self.max_bytes:  # size is checked before anything is read or decoded
                with open(path, "rb") as fh:  # + 1: notices a file that grew since lstat
                    data = fh.read(self.max_bytes + 1)
                sha = sha256_bytes(data) if len(data) <= self.max_bytes else None
            if folder is None:
                reason = "not in a label folder"
            elif folder not in self.labels:
                reason = f"unknown label {folder!r} (labels: {', '.join(self.labels)})"
            elif sha is None:
                reason = f"file too large ({max(st.st_size, len(data))} bytes > max {self.max_bytes})"
            elif not data:
                reason = "empty file"
            elif sha in self._index:
                reason = f"duplicate of {(Path('data') / self._index[sha].path).as_posix()}"
            else:
                reason = image_problem(data, self.min_width, self.min_height)
        if reason is None and sha is not None and folder is not None:
            self._accept(path, folder, sha, report)
        else:
            self._quarantine(path, folder, reason or "unusable", sha, now, report)

    # ------------------------------------------------------------------ moving

    def _accept(self, path: Path, label: str, sha: str, report: IngestReport) -> None:
        split = split_for(sha, self.test_fraction)
        dest = _free_name(self.data_dir / split / label, sha[:16] + path.suffix.lower())
        os.replace(path, dest)
        self._index[sha] = IndexEntry(sha256=sha, label=label, split=split, size=dest.stat().st_size,
                                      path=dest.relative_to(self.data_dir).as_posix())
        report.accepted.append((str(path), str(dest)))
        log.info("image_accepted", file=str(path), destination=str(dest), label=label, split=split)

    def _quarantine(self, path: Path, folder: Optional[str], reason: str, sha: Optional[str], now: float,
                    report: IngestReport) -> None:
        target_dir = self.quarantine_dir / (folder or UNLABELED)
        target_dir.mkdir(parents=True, exist_ok=True)
        dest = _free_name(target_dir, path.name)
        os.replace(path, dest)  # the user's file first; the note about it second
        note = {"source": str(path), "reason": reason, "sha256": sha,
                "time": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")}
        atomic_write(dest.with_name(dest.name + REASON_SUFFIX), json.dumps(note, indent=2) + "\n")
        report.quarantined.append((str(path), reason))
        log.warning("image_quarantined", file=str(path), reason=reason, destination=str(dest), label=folder)

    # ------------------------------------------------------------------ dedupe index

    def _load_index(self) -> dict[str, IndexEntry]:
        """The saved index, checked against the store's files; rebuilt by hashing as needed."""
        saved = self.store.read_index()
        if saved is None and self.store.index_path.exists():
            log.warning("inbox_index_unreadable", file=str(self.store.index_path))
        index = self.store.reconciled(saved)
        if saved is None or {entry.sha256: entry for entry in saved.images} != index:
            if saved is not None or index:  # not worth a line on a fresh install
                log.info("inbox_index_rebuilt", file=str(self.store.index_path), entries=len(index))
            self.store.write_index(index)
        return index


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-1.ext``, ``name-2.ext``... : never an existing file (or its note)."""
    stem, ext = (name[: -len(Path(name).suffix)], Path(name).suffix) if Path(name).suffix else (name, "")
    candidate, n = folder / name, 0
    while candidate.exists() or candidate.is_symlink() or candidate.with_name(
            candidate.name + REASON_SUFFIX).exists():
        n += 1
        candidate = folder / f"{stem}-{n}{ext}"
    return candidate
