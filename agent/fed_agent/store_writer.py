"""The agent's one way to change its image store: the index, under a lock every writer shares.

Why: three writers change data/ and its index (data/.index.json): the inbox (the main loop),
the pseudo-labeler (the inference thread) and `fed-agent label` (another process: a person,
a script, the review page). Each change is made holding the index lock (a thread lock, and
an flock on data/ between processes) on the index as it is on disk at that
moment: a writer that finds the file replaced since it last read or wrote it reads it again
first. The flock is on the data/ folder itself (no lock file to leave behind). So no writer overwrites another's change with a stale copy.

Saving is the caller's choice: `editing(save_now=True)` writes before the lock is released
(`fed-agent label`, the review page: a person waits for it); otherwise the change is kept in
memory and written by a later `flush()` (the daemon flushes every second). Why at most once
per `save_interval` (the daemon's `inbox.index_save_seconds`, 300 s): each write rewrites the
whole index on the Pi's SD card (~300 bytes per image), and a camera filing a frame a minute
changed it twice per frame (filed, then pseudo-labeled): with thousands of images that was
gigabytes a day. What waits is in memory (the heartbeat's counts read it there), written at
shutdown (`flush(coalesce=False)`); after a power cut the files are found again on disk
(`ImageStore.reconciled`: hashed, unlabeled ones classified again), so nothing is lost. An unsaved change survives another process's
write: when the file changed under us, our entries whose file is where they say win, and
the other's win for every file that moved (a file's place in data/ is the truth).

A failed write (disk full) raises OSError and keeps the change in memory, unsaved, for the
next try. `IndexBusy` says the lock was not free within its timeout; nothing was changed.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Optional

from fed_common.store import REASON_SUFFIX, ImageStore, IndexEntry


class IndexBusy(Exception):
    """Another process held the index lock for longer than the timeout."""


class TrackedEntries(dict):
    """sha256 -> IndexEntry that notes which entries were changed (entries are frozen:
    every change is an assignment or a removal)."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.changed: set[str] = set()

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.changed.add(key)

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self.changed.add(key)

    def pop(self, key, *default):
        self.changed.add(key)
        return super().pop(key, *default)


class StoreWriter:
    """data/'s index, shared by every writer in this process and kept in step with others."""

    def __init__(self, data_dir: str | Path, log, lock_timeout: float = 30.0, save_interval: float = 0.0,
                 clock=time.monotonic) -> None:
        self.store = ImageStore(data_dir)
        self.data_dir, self.log, self.lock_timeout = self.store.data_dir, log, lock_timeout
        self.save_interval, self._clock = save_interval, clock
        self._saved_at: Optional[float] = None  # clock() of our last write (None: not yet)
        self._thread_lock = threading.RLock()
        self._depth = 0  # editing() inside editing() on one thread: flock once
        self._entries = TrackedEntries()
        self._seen: Optional[tuple] = ("never read",)
        self._pending: set[str] = set()  # changed here since the last save
        self.unsaved = False  # something (our change, or a rebuild) is not on disk yet

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def _locked(self, timeout: Optional[float]) -> Iterator[None]:
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
            try:
                _flock(fd, self.lock_timeout if timeout is None else timeout, self.data_dir)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
            finally:
                os.close(fd)  # releases the flock

    @contextlib.contextmanager
    def editing(self, save_now: bool = False, timeout: Optional[float] = None) -> Iterator[TrackedEntries]:
        """The index as it is now (sha256 -> entry), to read and change; changes are saved
        at the end (save_now) or by the next flush()."""
        with self._locked(timeout):
            self._refresh()
            entries = self._entries
            try:
                yield entries
            finally:
                if entries.changed:
                    self._pending |= entries.changed
                    entries.changed = set()
                    self.unsaved = True
            if save_now and self.unsaved:
                self._save()

    def entries(self, timeout: Optional[float] = None) -> dict[str, IndexEntry]:
        """A copy of the index as it is now (another process's changes included)."""
        with self.editing(timeout=timeout) as entries:
            return dict(entries)

    def flush(self, timeout: Optional[float] = None, force: bool = False, coalesce: bool = True) -> None:
        """Write what is unsaved (OSError, IndexBusy: it stays unsaved, for the next flush),
        unless `coalesce` and the last write is less than `save_interval` old; `force`: write
        even so (the probe that notices space coming back)."""
        if not (self.unsaved or force):
            return
        if coalesce and not force and self._saved_at is not None \
                and self._clock() - self._saved_at < self.save_interval:
            return
        with self._locked(timeout):
            self._refresh()
            if self.unsaved or force:
                self._save()

    # ------------------------------------------------------------------ reading, writing

    def _index_key(self) -> Optional[tuple]:
        try:
            st = os.stat(self.store.index_path)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    def _refresh(self) -> None:
        """Read the index again if someone replaced (or removed) it since we last did."""
        key = self._index_key()
        if key == self._seen:
            return
        saved = self.store.read_index()
        if saved is None and key is not None:
            self.log.warning("store_index_unreadable", file=str(self.store.index_path))
        fresh = self.store.reconciled(saved)
        if saved is None or {entry.sha256: entry for entry in saved.images} != fresh:
            if saved is not None or fresh:  # not worth a line on a fresh install
                self.log.info("store_index_rebuilt", file=str(self.store.index_path), entries=len(fresh))
            self.unsaved = True
        for sha in self._pending:  # ours, not saved yet: the other writer never saw them
            ours = self._entries.get(sha)
            if ours is not None and (self.data_dir / ours.path).is_file() and (
                    sha not in fresh or fresh[sha].path == ours.path):
                fresh[sha] = ours  # else the file moved: the other writer's entry is the truth
        self._entries, self._seen = TrackedEntries(fresh), key

    def _save(self) -> None:
        self.store.write_index(self._entries)  # OSError: stays unsaved, for the next try
        self.unsaved, self._pending, self._saved_at = False, set(), self._clock()
        self._seen = self._index_key()

    # ------------------------------------------------------------------ what the store holds

    def cached(self) -> dict[str, IndexEntry]:
        """A copy of the index as this process last read or changed it: no flock, no disk
        (the counts for the heartbeat and STATUS: at most another thread's edit is waited for)."""
        with self._thread_lock:
            return dict(self._entries)

    def withdraw_pseudo_labels(self, running_version: int) -> list[IndexEntry]:
        """Take back every pseudo label made by a model newer than the one running (it was
        rolled back): each such image is unlabeled again, to be classified by the running
        model, with the reason kept. Returns the withdrawn entries as they were."""
        withdrawn, when = [], now_iso()
        with self.editing() as entries:
            for sha, entry in list(entries.items()):
                guess = entry.prediction
                if entry.status != "pseudo" or guess is None or guess.model_version <= running_version:
                    continue
                reason = (f"withdrawn at {when}: pseudo label {guess.label!r} of v{guess.model_version} "
                          f"({guess.confidence:.2f}); the model was rolled back to v{running_version}")
                entries[sha] = changed(entry, status="unlabeled", prediction=None, reason=reason)
                withdrawn.append(entry)
        return withdrawn


def _flock(fd: int, timeout: float, path: Path) -> None:
    """An exclusive flock on `fd`, waited for until the deadline (then IndexBusy)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise IndexBusy(f"the store index is locked by another process ({path}) for over "
                                f"{timeout:g} s") from None
            time.sleep(0.02)


def changed(entry: IndexEntry, **fields) -> IndexEntry:
    """`entry` with these fields changed, validated again (a status needs its fields)."""
    return IndexEntry.model_validate({**entry.model_dump(), **fields})


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name-1.ext``, ``name-2.ext``... : never an existing file (or its note)."""
    stem, ext = (name[: -len(Path(name).suffix)], Path(name).suffix) if Path(name).suffix else (name, "")
    candidate, n = folder / name, 0
    while candidate.exists() or candidate.is_symlink() or candidate.with_name(
            candidate.name + REASON_SUFFIX).exists():
        n += 1
        candidate = folder / f"{stem}-{n}{ext}"
    return candidate
