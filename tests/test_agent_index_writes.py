"""Fewer writes on the SD card: the store's index is rewritten at most once per
`inbox.index_save_seconds`, and nothing is lost for it (issue 12, item 5).

Why it matters: every write rewrites the whole index; a camera filing a frame a minute wrote it
twice per frame (filed, then pseudo-labeled). benchmarks/agent_writes.py measures the bytes.
"""

import io
import json
import os
import signal

from PIL import Image

from agent_harness import AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config
from conftest import free_port, needs_agent_venv, wait_for
from fed_agent.store_writer import StoreWriter
from fed_common.logs import get_logger
from fed_common.store import ImageStore, IndexEntry, StoredPrediction


def jpeg(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (80, 80), color).save(buf, "JPEG")
    return buf.getvalue()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def human(sha: str, name: str) -> IndexEntry:
    return IndexEntry(sha256=sha, label="head", split="train", size=1, path=f"train/head/{name}")


def test_writer_coalesces_saves_within_the_interval_and_writes_at_shutdown(tmp_path):
    data = tmp_path / "data"
    (data / "train" / "head").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (data / "train" / "head" / name).write_bytes(name.encode())
    clock = FakeClock()
    writer = StoreWriter(data, get_logger(), save_interval=300, clock=clock)
    store = ImageStore(data)

    def on_disk() -> set[str]:
        saved = store.read_index()
        return {entry.path for entry in saved.images} if saved else set()

    with writer.editing():  # reads what is on disk: no index yet, so one is due
        pass
    writer.flush()  # the first save is never held back (a fresh index is written at once)
    assert on_disk() == {"train/head/a.jpg", "train/head/b.jpg", "train/head/c.jpg"}
    written = store.index_path.stat().st_mtime_ns
    sha_a = next(e.sha256 for e in store.read_index().images if e.path.endswith("a.jpg"))
    with writer.editing() as entries:  # a change 10 s after the save: it waits
        entries[sha_a] = entries[sha_a].model_copy(update={"reason": "checked"})
    clock.now += 10
    writer.flush()
    assert writer.unsaved and store.index_path.stat().st_mtime_ns == written
    assert writer.cached()[sha_a].reason == "checked"  # the heartbeat's counts read it here
    clock.now += 290  # 300 s after the save: due
    writer.flush()
    assert not writer.unsaved and next(e for e in store.read_index().images if e.sha256 == sha_a).reason == "checked"
    with writer.editing() as entries:  # shutdown does not wait
        entries[sha_a] = entries[sha_a].model_copy(update={"reason": "again"})
    writer.flush(coalesce=False)
    assert next(e for e in store.read_index().images if e.sha256 == sha_a).reason == "again"
    with writer.editing(save_now=True) as entries:  # a person's label (fed-agent label) neither
        entries[sha_a] = entries[sha_a].model_copy(update={"reason": "person"})
    assert next(e for e in store.read_index().images if e.sha256 == sha_a).reason == "person"


def test_compact_index_reads_back_the_same_entries(tmp_path):
    store = ImageStore(tmp_path)
    pseudo = IndexEntry(sha256="a" * 64, label=None, split="unlabeled", size=5, path="unlabeled/a.jpg",
                        status="pseudo", prediction=StoredPrediction(label="head", confidence=0.97,
                                                                     model_version=3, time="2026-12-03T10:00:00Z"))
    entries = {"b" * 64: human("b" * 64, "b.jpg"), pseudo.sha256: pseudo}
    store.write_index(entries)
    text = store.index_path.read_text()
    assert text.count("\n") == 1 and '"status"' not in text.split("},{")[0]  # the human one: no default written
    assert json.loads(text)["version"] == 2
    assert {e.sha256: e for e in store.read_index().images} == entries


@needs_agent_venv
def test_daemon_holds_index_writes_back_and_loses_nothing(tmp_path):
    """Production's interval (300 s): the index is written at start; photos filed after it are
    in data/ and in the heartbeat's counts but not yet in the index file; SIGTERM writes them;
    after a SIGKILL the restarted agent finds the unindexed one again on disk."""
    state = tmp_path / "state"
    beats, notify = HeartbeatServer(), NotifySocket(tmp_path / "notify.sock")
    cfg = write_config(tmp_path / "agent.yaml", state, f"127.0.0.1:{free_port()}", beats.url,
                       token_file(tmp_path), free_port(), inbox__index_save_seconds=300)
    inbox, store = state / "inbox" / "head", ImageStore(state / "data")

    def stored() -> int:
        return len(list((state / "data" / "train").rglob("*.jpg")) + list((state / "data" / "test").rglob("*.jpg")))

    def in_index() -> int:
        saved = store.read_index()
        return len(saved.images) if saved else -1

    def counted(n: int):
        return lambda: any(sum(v["train"] + v["test"] for v in b["body"]["images"]["labels"].values()) == n
                           for b in beats.received)

    agent = AgentProcess(cfg, notify, tmp_path / "agent.log")
    try:
        wait_for(lambda: in_index() == 0, 40, what="the agent writing its (empty) index at start")
        written = store.index_path.stat().st_mtime_ns
        for i in range(4):
            (inbox / f"photo-{i}.jpg").write_bytes(jpeg((10, 60 * i, 200)))
        wait_for(lambda: stored() == 4, 40, what="the four photos filed")
        wait_for(counted(4), 40, what="a heartbeat counting four photos")
        assert in_index() == 0 and store.index_path.stat().st_mtime_ns == written  # held back
        os.killpg(agent.proc.pid, signal.SIGTERM)
        agent.proc.wait(timeout=30)
        assert in_index() == 4  # shutdown wrote what waited

        (inbox / "late.jpg").write_bytes(jpeg((90, 90, 90)))
        agent = AgentProcess(cfg, notify, tmp_path / "agent2.log")
        wait_for(lambda: in_index() == 5, 40, what="the restarted agent's first save (not held back)")
        (inbox / "later.jpg").write_bytes(jpeg((30, 200, 30)))
        wait_for(lambda: stored() == 6, 40, what="the later photo filed")
        supernodes = agent.children()  # in their own process group: a power cut takes them too
        os.killpg(agent.proc.pid, signal.SIGKILL)  # a power cut: no shutdown write
        for child in supernodes:
            try:
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        agent.proc.wait(timeout=30)
        assert in_index() == 5 and stored() == 6
        agent = AgentProcess(cfg, notify, tmp_path / "agent3.log")
        wait_for(lambda: in_index() == 6, 40, what="the restarted agent indexing the file it found on disk")
    finally:
        agent.stop()
        beats.close()
        notify.close()
