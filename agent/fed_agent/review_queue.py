"""The review queue as the page sees it, and what its three actions do to the store.

The queue is every stored image with status "review" (the running model was not sure
enough, or the class cap held it back), the least confident first (ties by path), so a
person spends their time where the model knows least. Images not classified yet
("unlabeled": no guess to show) and pseudo labels are not in it; `fed-agent label` names any
of them.

- label: the image becomes a human label at once (human_labels.apply_human_label, the code
  `fed-agent label` and the inbox use): it moves to data/<split>/<label>/ and its entry says so;
- skip: it goes to the back of this page's queue; nothing on disk changes, and a restart of
  the page forgets it;
- not usable: it leaves the store for quarantine/unlabeled/<name> with its note
  <name>.reason.json ("not usable (review page)", with the model's guess), and its entry is
  removed: nothing reads quarantine/ for training, and nothing is deleted (a person who
  changes their mind copies it into inbox/<label>/).

Every change is made under the store's one index lock (StoreWriter.editing, saved before the
lock is released), so the running daemon, `fed-agent label` and the page never overwrite
each other's changes; an action on an image that is no longer waiting for review (the inbox
labeled it meanwhile, say) changes nothing and says so.

`stored_file` is the only way from a SHA-256 to a file: the entry's path, which must stay
inside data/ and be a regular file (never a symbolic link), so no request can reach anything
else.
"""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fed_common.files import atomic_write
from fed_common.store import REASON_SUFFIX, UNLABELED, IndexEntry

from .human_labels import apply_human_label
from .store_writer import StoreWriter, free_name, now_iso

SHA256 = re.compile(r"^[0-9a-f]{64}$")
NOT_USABLE = "not usable (review page)"


class NotInQueue(LookupError):
    """The image is not (any more) waiting for review; the message says what it is."""


@dataclass(frozen=True)
class Done:
    """What an action did, for the page's notice."""

    sha256: str
    text: str


class ReviewQueue:
    def __init__(self, writer: StoreWriter, quarantine_dir: Path, labels: list[str], test_fraction: float,
                 log) -> None:
        self.writer, self.quarantine_dir, self.log = writer, Path(quarantine_dir), log
        self.labels, self.test_fraction = list(labels), test_fraction
        self._lock = threading.Lock()
        self._skipped: list[str] = []  # this page's skips, oldest first: they go last, in this order
        self.last: Optional[Done] = None

    def items(self) -> list[IndexEntry]:
        """The images waiting for review: lowest confidence first, this session's skips last."""
        waiting = sorted((e for e in self.writer.entries().values() if e.status == "review"),
                         key=lambda e: (e.prediction.confidence, e.path))
        with self._lock:
            order = {sha: i for i, sha in enumerate(self._skipped)}
        return sorted(waiting, key=lambda e: order.get(e.sha256, -1))  # stable: the rest keep their order

    def stored_file(self, entry: IndexEntry) -> Path:
        """The entry's file: a regular file inside data/, or NotInQueue."""
        data_dir = self.writer.data_dir.resolve()
        path = data_dir / entry.path
        try:
            inside = path.resolve(strict=True).is_relative_to(data_dir) and path.resolve() == path
            regular = stat.S_ISREG(os.lstat(path).st_mode)
        except (OSError, RuntimeError):
            inside = regular = False
        if not (inside and regular):
            raise NotInQueue(f"data/{entry.path} is not a regular file inside the store")
        return path

    def entry(self, sha: str) -> IndexEntry:
        """The stored image `sha` (any status), or NotInQueue."""
        found = self.writer.entries().get(sha)
        if found is None:
            raise NotInQueue(f"no stored image has SHA-256 {sha}")
        return found

    def label(self, sha: str, label: str) -> Done:
        with self.writer.editing(save_now=True) as entries:
            entry = self._waiting(entries, sha)
            self.stored_file(entry)
            labeled = apply_human_label(entries, self.writer.data_dir, sha, label, self.labels,
                                        self.test_fraction, self.log)
        return self._done(sha, f"labeled {label}: data/{labeled.path}")

    def skip(self, sha: str) -> Done:
        with self.writer.editing() as entries:
            self._waiting(entries, sha)
        with self._lock:
            self._skipped = [s for s in self._skipped if s != sha] + [sha]
        self.log.info("review_skipped", sha256=sha)
        return self._done(sha, "skipped: back of the queue", gone=False)

    def not_usable(self, sha: str) -> Done:
        """Into quarantine with its note (the note first: never a file there without one)."""
        with self.writer.editing(save_now=True) as entries:
            entry = self._waiting(entries, sha)
            source = self.stored_file(entry)
            folder = self.quarantine_dir / UNLABELED
            folder.mkdir(parents=True, exist_ok=True)
            dest = free_name(folder, source.name)
            note = dest.with_name(dest.name + REASON_SUFFIX)
            guess = entry.prediction
            atomic_write(note, json.dumps({"source": f"data/{entry.path}", "reason": NOT_USABLE, "sha256": sha,
                                           "time": now_iso(), "prediction": guess.model_dump()}, indent=2) + "\n")
            try:
                os.replace(source, dest)
            except BaseException:
                note.unlink(missing_ok=True)
                raise
            del entries[sha]
        self.log.warning("image_quarantined", file=f"data/{entry.path}", reason=NOT_USABLE, destination=str(dest),
                         sha256=sha, model_label=guess.label, model_confidence=guess.confidence)
        rel = dest.relative_to(self.quarantine_dir.parent).as_posix()
        return self._done(sha, f"not usable: moved to {rel}")

    def _waiting(self, entries: dict[str, IndexEntry], sha: str) -> IndexEntry:
        entry = entries.get(sha)
        if entry is None:
            raise NotInQueue(f"{sha[:12]}... is not in the store any more")
        if entry.status != "review":
            what = f"has the human label {entry.label!r}" if entry.status == "human" else f"is {entry.status}"
            raise NotInQueue(f"data/{entry.path} is not waiting for review: it {what}")
        return entry

    def _done(self, sha: str, text: str, gone: bool = True) -> Done:
        """Note what was done; an image that left the queue leaves the skip list too."""
        with self._lock:
            if gone:
                self._skipped = [s for s in self._skipped if s != sha]
            self.last = Done(sha, text)
        return self.last

    def refused(self, sha: str, text: str) -> None:
        """An action that changed nothing: the page says why."""
        with self._lock:
            self.last = Done(sha, f"nothing done: {text}")
