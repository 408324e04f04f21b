"""Embeddings at ingest: each stored image's backbone embedding, computed while the Pi is idle.

Why: every campaign's ClientApp turns each photo into a backbone embedding once (the cache,
fedapp.embeddings); a photo filed since the last campaign was embedded in round 1, inside the
round's deadline (15-16 s per client for the shared photos on a PC, far more on a Pi). The
agent has all day: it embeds each image the store holds that lacks a vector, so a round reads
vectors only (the ClientApp does not even read a photo that is embedded, fedapp.node_data).

Which backbone: the last campaign's (`LastTraining.backbone_sha`, in the status file the
ClientApp writes), its file from the agent's artifact store in cache/. The backbone is frozen
for months, so the next campaign almost always uses the same; if not, its round 1 computes
as before. Same cache, same key (backbone hash, image hash) as the ClientApp: the one
`EmbeddingCache`. A vector is only stored for bytes whose SHA-256 is the index's.

Which images: every entry of this process's copy of the index (`StoreWriter.cached`: no disk,
no lock): labeled train/test and unlabeled ones (pseudo-labeled images train when a campaign
asks). A file changed since it was indexed, or not an image, is left to the ClientApp (which
names it) and not tried again; one that moved meanwhile is tried at the next pass.

When: only while idle, i.e. not while the SuperNode serves a message (a `flwr-clientapp`
child runs: `SuperNodeSupervisor.serving`, what the model updater waits on too), checked
before every image, so a round that starts mid-pass gets the CPU back within one image. At
most BATCH images a pass, then the stop flag and the index are looked at again, so shutdown
stays prompt; between passes it waits EVERY seconds or until the inbox files something.

How low: this thread's nice value is 19 (os.setpriority on its own thread id: on Linux nice
is per thread, and the TFLite interpreter's worker threads, started from this thread,
inherit it). Why a thread and not a niced subprocess: no second Python with numpy and the
interpreter resident on a Pi, and the loop above needs the supervisor's view of the children;
the GIL is shared with the main loop, but Pillow's decode and the interpreter's invoke release
it. The interpreter is dropped once nothing is pending, so an idle agent does not hold it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from fed_common.files import sha256_bytes
from fed_common.node_config import LastTraining
from fed_common.store import IndexEntry
from fedapp.artifacts import ArtifactStore
from fedapp.embeddings import EmbeddingCache

from .threads import ContextThread

BATCH = 16  # images a pass: ~2-5 s on a Pi 4, then stop and training are checked again
EVERY = 30.0  # seconds between passes when nothing wakes it (a new campaign's backbone shows up here)
NICE = 19


class Embedder(ContextThread):
    def __init__(self, entries: Callable[[], dict[str, IndexEntry]], data_dir: Path, cache_dir: Path,
                 status_file: Path, busy: Callable[[], bool], log, batch: int = BATCH,
                 every: float = EVERY) -> None:
        super().__init__(name="embedder")
        self.entries, self.data_dir, self.cache_dir = entries, Path(data_dir), Path(cache_dir)
        self.status_file, self.busy, self.log = Path(status_file), busy, log
        self.batch, self.every = batch, every
        self.wake_event = threading.Event()
        self.computed = 0  # since start (tests, status)
        self._cache: Optional[EmbeddingCache] = None
        self._given_up: set[str] = set()  # image hashes not to try again (changed, not an image)

    def wake(self) -> None:
        """From the main loop: the inbox filed something."""
        self.wake_event.set()

    def stop(self) -> None:
        super().stop()
        self.wake_event.set()

    def work(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
        except OSError as exc:  # never fatal: it then runs at the agent's priority, still only while idle
            self.log.warning("embedder_priority_not_lowered", error=str(exc))
        while not self.stop_event.is_set():
            try:
                more = self.run_pass()
            except Exception as exc:  # noqa: BLE001 - the worker must live; the ClientApp embeds as before
                self.log.error("embeddings_failed", error=f"{type(exc).__name__}: {exc}"[:300])
                more = False
            if not more:
                self.wake_event.wait(self.every)
                self.wake_event.clear()

    def backbone(self) -> Optional[EmbeddingCache]:
        """The cache for the last campaign's backbone (None: no campaign yet, or its file is gone)."""
        last = LastTraining.read(self.status_file)
        sha = last.backbone_sha if last else ""
        if not sha:
            return None
        if self._cache is None or self._cache.dir.name != f"emb-{sha[:16]}":
            store = ArtifactStore(self.cache_dir)
            if not store.has(sha):
                return None
            self._cache, self._given_up = EmbeddingCache(self.cache_dir, store.path(sha), sha), set()
        return self._cache

    def pending(self, cache: EmbeddingCache) -> list[IndexEntry]:
        return sorted((e for sha, e in self.entries().items() if sha not in self._given_up and not cache.has(sha)),
                      key=lambda entry: entry.path)

    def run_pass(self) -> bool:
        """Embed up to `batch` images; True when more wait untried and this pass got somewhere
        (a pass that embedded nothing waits for the next wake-up, so a file that keeps failing
        does not spin)."""
        cache = None if self.busy() else self.backbone()
        if cache is None:
            return False
        todo = self.pending(cache)
        if not todo:
            self._cache = None  # frees the interpreter; made again when something is filed
            return False
        started, before, tried = time.monotonic(), cache.computed, 0
        for entry in todo[: self.batch]:
            if self.stop_event.is_set() or self.busy():
                break
            self._embed(cache, entry)
            tried += 1
        count = cache.computed - before
        self.computed += count
        if count:
            self.log.info("embeddings_precomputed", count=count, seconds=round(time.monotonic() - started, 2),
                          backbone=cache.dir.name[4:16], remaining=len(todo) - tried)
        return count > 0 and len(todo) > tried

    def _embed(self, cache: EmbeddingCache, entry: IndexEntry) -> None:
        path = self.data_dir / entry.path
        try:
            data = path.read_bytes()
        except OSError:
            return  # moved or removed meanwhile (a label given): the next pass sees the index again
        if sha256_bytes(data) != entry.sha256:
            self._give_up(entry, "content changed since the inbox stored it")
            return
        try:
            cache.compute(data, entry.sha256, str(path))
        except ValueError as exc:  # not an image after all: the ClientApp skips it by name
            self._give_up(entry, str(exc)[:300])

    def _give_up(self, entry: IndexEntry, reason: str) -> None:
        self._given_up.add(entry.sha256)
        self.log.warning("embedding_not_precomputed", file=entry.path, reason=reason)


def embedder(cfg, inbox, supervisor, log) -> Embedder:
    """The worker for this agent: its store's index, cache and status file, idle = not serving."""
    return Embedder(inbox.writer.cached, cfg.data_dir, cfg.cache_dir, supervisor.status_file,
                    supervisor.serving, log)
