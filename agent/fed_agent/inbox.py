"""The device's image inbox: photos in, checked, then filed for training or quarantined.

Contract (for camera programs and people):

* Drop a labeled image into ``<state_dir>/inbox/<label>/`` (one folder per configured
  label; the agent creates them), an image without a label (a camera's frame) into
  ``<state_dir>/inbox/unlabeled/``. Sub-folders inside these folders are fine.
* Write under a name that starts with ``.`` or ends in ``.part``/``.tmp`` and rename it
  when complete: such names are ignored. A file modified less than ``settle_seconds``
  ago is left for the next scan, in case its writer is not done yet.
* Each scan decodes every waiting file with Pillow (JPEG, PNG, WebP, BMP, GIF, TIFF).
  A good image is MOVED to ``data/<split>/<label>/<sha256[:16]><ext>``; ``split`` is
  ``test`` iff ``int(sha256[:8], 16) / 2**32 < test_fraction``, so an image never
  changes side, whichever device or scan sees it. A good unlabeled image goes through the
  same checks and is MOVED to ``data/unlabeled/<sha256[:16]><ext>`` (never into a split:
  pseudo_labels.py says what becomes of it).
* A labeled image with the same content as a stored image without a human label (unlabeled,
  pseudo-labeled or in review) gives that image its human label (human_labels.py: it moves
  into its split); the dropped copy is quarantined as the duplicate it is.
* Anything else (empty, too large, unreadable, too small, unknown label folder, file
  loose in ``inbox/``, or the same content as an image already stored) is MOVED to
  ``quarantine/<label or _unlabeled>/<original name>`` (``name-1.jpg`` etc. if taken)
  next to ``<that name>.reason.json`` saying why: {"source", "reason", "time", "sha256"}
  (sha256 is null for a file too large to read).
* A hard-linked file (its data also lives at another path, which could change a stored
  image later) and a symbolic link are quarantined, never followed: copy the image itself.
* Nothing is ever deleted or overwritten; moves stay inside state_dir (os.replace), made
  relative to the folder the file was listed in (inbox_walk.py: nothing from outside the
  state folder can be moved).
* Out of space (or another error writing the store) never stops the agent: the scan
  stops, nothing waiting is moved or lost, `storage_problem` says why (the heartbeat and
  `systemctl status` show it), and the next scans retry until space is back. A reason
  note is written before its file is moved, so no quarantined file is left without one.

Why a full SHA-256 index (``data/.index.json``) and not just the file-name prefix: the
duplicate check must be exact, and it must survive restarts. The index is reconciled with
the files in the store at start-up (files hashed if missing from it), so a crash between
a move and the index update, or a deleted index, only costs some hashing. Every change to
it goes through store_writer.StoreWriter (other writers: the pseudo-labeler, `fed-agent
label`), one file at a time, and is written once at the end of the scan.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

import structlog
from fed_common.files import atomic_write, remove_stale_temp_files, sha256_bytes
from fed_common.images import MAX_PIXELS, image_problem
from fed_common.store import REASON_SUFFIX, SPLITS, UNLABELED, IndexEntry, StoreLayout, split_for

from .human_labels import apply_human_label
from .inbox_walk import Waiting, is_ignored, read_waiting, waiting_files
from .store_writer import IndexBusy, StoreWriter, free_name

__all__ = ["Inbox", "IngestReport", "is_ignored", "split_for"]
_OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)
LOOSE = "_unlabeled"  # quarantine/_unlabeled/: files loose in inbox/, outside any folder
DAEMON_LOCK_TIMEOUT = 5.0  # seconds the daemon waits for `fed-agent label`: well inside its watchdog
_LABEL = re.compile(r"^[A-Za-z0-9_-]+$")

log = structlog.get_logger()


@dataclass
class IngestReport:
    """What one scan did: (source, destination) accepted and (source, reason) quarantined;
    `filed` is the store's entry of each accepted image (what on-device inference needs);
    `labeled` the stored images a dropped copy gave their human label."""

    accepted: list[tuple[str, str]] = field(default_factory=list)
    filed: list[IndexEntry] = field(default_factory=list)
    quarantined: list[tuple[str, str]] = field(default_factory=list)
    labeled: list[IndexEntry] = field(default_factory=list)


class Inbox:
    """Turns ``<state_dir>/inbox`` into a deduplicated, split image store under ``data/``."""

    def __init__(self, state_dir: Path, labels: list[str], *, min_width: int = 64, min_height: int = 64,
                 max_bytes: int = 20_000_000, test_fraction: float = 0.2, settle_seconds: float = 2.0,
                 max_pixels: int = MAX_PIXELS, clock: Callable[[], float] = time.time,
                 index_save_seconds: float = 0.0) -> None:
        bad = [label for label in labels if not isinstance(label, str) or not _LABEL.match(label)]
        if bad or len(set(labels)) != len(labels) or not labels or UNLABELED in labels:
            raise ValueError(f"labels must be unique names of letters, digits, '_' or '-', not "
                             f"{UNLABELED!r} (got {labels!r})")
        if not 0 <= test_fraction < 1:
            raise ValueError(f"test_fraction must be in [0, 1) (got {test_fraction!r})")
        if min(min_width, min_height, max_bytes) < 1 or settle_seconds < 0:
            raise ValueError(f"min_width, min_height, max_bytes must be >= 1 and settle_seconds >= 0 (got "
                             f"{min_width}, {min_height}, {max_bytes}, {settle_seconds})")
        self.state_dir = Path(state_dir)
        self.labels = list(labels)
        self.min_width, self.min_height, self.max_bytes = min_width, min_height, max_bytes
        self.max_pixels = max_pixels
        self.storage_problem: Optional[str] = None  # set while the store cannot be written
        self.test_fraction, self.settle_seconds, self._clock = test_fraction, settle_seconds, clock
        layout = StoreLayout(self.state_dir)
        self.inbox_dir, self.data_dir, self.quarantine_dir = layout.inbox_dir, layout.data_dir, layout.quarantine_dir
        for folder in (self.data_dir, self.quarantine_dir):  # ours only: never the user's inbox
            for stale in remove_stale_temp_files(folder):
                log.info("stale_temp_file_removed", file=str(stale))
        self._guard_storage(self._make_dirs)
        self.writer = StoreWriter(self.data_dir, log, lock_timeout=DAEMON_LOCK_TIMEOUT,
                                  save_interval=index_save_seconds)
        self.store = self.writer.store
        self._guard_storage(self._load_index)

    def _load_index(self) -> None:
        """The saved index, checked against the store's files; rebuilt (by hashing) and
        written if it must be (at once the first time; then at most every index_save_seconds)."""
        with self.writer.editing():
            pass
        self.writer.flush()

    def _make_dirs(self) -> None:
        # Made up front (and again each scan) so a person sees where to drop photos.
        for label in self.labels:
            (self.inbox_dir / label).mkdir(parents=True, exist_ok=True)
            for split in SPLITS:
                (self.data_dir / split / label).mkdir(parents=True, exist_ok=True)
        (self.inbox_dir / UNLABELED).mkdir(parents=True, exist_ok=True)
        (self.data_dir / UNLABELED).mkdir(parents=True, exist_ok=True)
        self.quarantine_dir.mkdir(parents=True, exist_ok=True)

    def _guard_storage(self, write: Callable[[], None]) -> bool:
        """Run a store write; on failure remember why (and log it once) instead of raising.
        A busy index (another process labeling) is not a storage problem: it is tried again."""
        try:
            write()
        except IndexBusy as exc:
            log.warning("store_index_busy", reason=str(exc))
            return False
        except OSError as exc:
            self._storage_failed(exc)
            return False
        if self.storage_problem:
            log.info("inbox_storage_recovered", was=self.storage_problem)
        self.storage_problem = None
        return True

    def _storage_failed(self, exc: OSError) -> None:
        problem = ("disk full" if exc.errno in _OUT_OF_SPACE else "store not writable") + f": {exc}"
        if problem != self.storage_problem:
            log.error("inbox_storage_problem", problem=problem)
        self.storage_problem = problem

    def flush(self, timeout: float = 1.0, coalesce: bool = True) -> bool:
        """Write what is unsaved in the index (the daemon calls it every tick: its
        pseudo-labeler's changes are written here), at most every index_save_seconds unless
        not `coalesce` (shutdown)."""
        return self._guard_storage(lambda: self.writer.flush(timeout=timeout, coalesce=coalesce))

    # ------------------------------------------------------------------ scanning

    def ingest(self) -> IngestReport:
        """Process every settled file waiting in the inbox; one bad file never stops the scan,
        and a full disk stops it without losing anything (see `storage_problem`)."""
        report, now = IngestReport(), self._clock()
        if not (self._guard_storage(self._make_dirs) and self._guard_storage(self._load_index)):
            return report  # (the index read again: another process, `fed-agent label`, may have changed it)
        try:
            for item in waiting_files(self.inbox_dir):
                try:
                    with self.writer.editing() as entries:  # one file at a time: others get their turn
                        self._ingest_one(item, now, report, entries)
                except FileNotFoundError:
                    continue  # taken away by someone else between listing and moving
                except IndexBusy as exc:
                    log.warning("store_index_busy", reason=str(exc))
                    break  # the rest waits, untouched, for the next scan
                except OSError as exc:
                    if exc.errno in _OUT_OF_SPACE:
                        self._storage_failed(exc)
                        break  # the rest waits, untouched, for the next scan
                    log.error("inbox_file_error", file=str(item.path), error=str(exc))
        finally:
            if self.writer.unsaved or self.storage_problem:  # also the probe that notices space coming back
                self._guard_storage(lambda: self.writer.flush(force=bool(self.storage_problem)))
        return report

    def counts(self) -> dict:
        """Stored images: per label and split the human-labeled ones, how many without a
        human label are pseudo-labeled, in review or not classified yet; quarantined files
        and files still waiting."""
        index = self.writer.cached()
        stored = Counter((entry.label, entry.split) for entry in index.values() if entry.status == "human")
        labels = {label: {split: stored[(label, split)] for split in SPLITS} for label in self.labels}
        quarantined = sum(1 for _, _, names in os.walk(self.quarantine_dir) for n in names
                          if not n.startswith(".") and not n.endswith(REASON_SUFFIX))
        by_status = Counter(entry.status for entry in index.values())
        return {"labels": labels, "quarantined": quarantined, "pending": sum(1 for _ in waiting_files(self.inbox_dir)),
                **{status: by_status[status] for status in ("pseudo", "review", "unlabeled")}}

    def _ingest_one(self, item: Waiting, now: float, report: IngestReport, entries: dict[str, IndexEntry]) -> None:
        st = os.stat(item.name, dir_fd=item.dir_fd, follow_symlinks=False)
        if now - st.st_mtime < self.settle_seconds:
            return  # maybe still being written: next scan
        sha: Optional[str] = None
        reason = _file_problem(st)
        if reason is None:
            data = b""
            if st.st_size <= self.max_bytes:  # size is checked before anything is read or decoded
                data = read_waiting(item, st, self.max_bytes)
                if data is None:
                    return  # replaced while we looked: next scan
                sha = sha256_bytes(data) if len(data) <= self.max_bytes else None
            reason = self._content_problem(item.folder, st.st_size, data, sha, entries)
        if reason is None and sha is not None and item.folder is not None:
            self._accept(item, item.folder, sha, report, entries)
            return
        if sha in entries and item.folder in self.labels and entries[sha].status != "human":
            reason = self._human_label_wins(sha, item.folder, report, entries)
        self._quarantine(item, reason or "unusable", sha, now, report)

    def _content_problem(self, folder: Optional[str], size: int, data: bytes, sha: Optional[str],
                         entries: dict[str, IndexEntry]) -> Optional[str]:
        """Why a regular file's content cannot be stored (None: it can)."""
        if folder is None:
            return "not in a label folder"
        if folder not in self.labels and folder != UNLABELED:
            return (f"unknown label {folder!r} (labels: {', '.join(self.labels)}); an image without a "
                    f"label goes into inbox/{UNLABELED}/")
        if sha is None:
            return f"file too large ({max(size, len(data))} bytes > max {self.max_bytes})"
        if not data:
            return "empty file"
        if sha in entries:
            return f"duplicate of {(Path('data') / entries[sha].path).as_posix()}"
        return image_problem(data, self.min_width, self.min_height, self.max_pixels)

    # ------------------------------------------------------------------ moving

    def _accept(self, item: Waiting, folder: str, sha: str, report: IngestReport,
                entries: dict[str, IndexEntry]) -> None:
        labeled = folder != UNLABELED
        split = split_for(sha, self.test_fraction) if labeled else UNLABELED
        target = self.data_dir / split / folder if labeled else self.data_dir / UNLABELED
        dest = free_name(target, sha[:16] + Path(item.name).suffix.lower())
        os.replace(item.name, dest, src_dir_fd=item.dir_fd)
        entry = IndexEntry(sha256=sha, label=folder if labeled else None, split=split, size=dest.stat().st_size,
                           path=dest.relative_to(self.data_dir).as_posix(), status="human" if labeled else UNLABELED)
        entries[sha] = entry
        report.accepted.append((str(item.path), str(dest)))
        report.filed.append(entry)
        log.info("image_accepted", file=str(item.path), destination=str(dest), label=entry.label, split=split)

    def _human_label_wins(self, sha: str, label: str, report: IngestReport, entries: dict[str, IndexEntry]) -> str:
        """The stored image without a human label gets this one; the reason its dropped copy
        is quarantined."""
        was = entries[sha]
        labeled = apply_human_label(entries, self.data_dir, sha, label, self.labels, self.test_fraction, log)
        report.labeled.append(labeled)
        return (f"duplicate of data/{labeled.path} (stored as {was.status}, without a human label: "
                f"this copy's label {label!r} was given to it)")

    def _quarantine(self, item: Waiting, reason: str, sha: Optional[str], now: float,
                    report: IngestReport) -> None:
        target_dir = self.quarantine_dir / (item.folder or LOOSE)
        target_dir.mkdir(parents=True, exist_ok=True)
        dest = free_name(target_dir, item.name)
        note_path = dest.with_name(dest.name + REASON_SUFFIX)
        note = {"source": str(item.path), "reason": reason, "sha256": sha,
                "time": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds")}
        # The note first: if the disk is full the file stays in the inbox, never loose
        # in quarantine without its reason.
        atomic_write(note_path, json.dumps(note, indent=2) + "\n")
        try:
            os.replace(item.name, dest, src_dir_fd=item.dir_fd)
        except BaseException:
            note_path.unlink(missing_ok=True)
            raise
        report.quarantined.append((str(item.path), reason))
        log.warning("image_quarantined", file=str(item.path), reason=reason, destination=str(dest),
                    label=item.folder)


def _file_problem(st: os.stat_result) -> Optional[str]:
    """Why a file must not be read at all (None: it may)."""
    if stat.S_ISLNK(st.st_mode):
        return "symbolic link (copy the image itself into the inbox)"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_nlink > 1:
        return (f"hard link: the same file has {st.st_nlink} names, so a change elsewhere would "
                "change a stored image (copy the image itself into the inbox)")
    return None
