"""A real fed-agent whose state folder is full to the brim keeps going and loses nothing.

The state folder is a small tmpfs; the disk is filled after photos are waiting in the inbox
(renamed in, which needs no space). The agent must keep heartbeating, say `disk_full` in the
heartbeat and in its systemd STATUS line, and once space is freed finish filing every photo.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess

import pytest
from PIL import Image

from agent_harness import AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config
from conftest import free_port, needs_agent_venv, wait_for

pytestmark = [needs_agent_venv,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")]


def photo(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((96, 96), 40 + seed).convert("RGB").save(buf, "JPEG", quality=80)
    return buf.getvalue()


def fill(path) -> None:
    """Write until the filesystem says ENOSPC."""
    with open(path, "wb", buffering=0) as fh:
        for size in (65536, 4096, 512, 1):  # big blocks, then the last partial ones
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError:
                continue


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "state"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_reported_then_ingest_resumes_with_nothing_lost(tmp_path, small_disk):
    beats, notify = HeartbeatServer(), NotifySocket(tmp_path / "notify.sock")
    token = token_file(tmp_path)
    cfg = write_config(tmp_path / "agent.yaml", small_disk, f"127.0.0.1:{free_port()}", beats.url,
                       token, free_port(), heartbeat__interval=5)
    agent = AgentProcess(cfg, notify, tmp_path / "agent.log")
    photos = {f"p{i}.jpg": photo(i) for i in range(5)}
    try:
        wait_for(lambda: beats.received, 60, what="a first heartbeat")
        inbox = small_disk / "inbox" / "head"
        for name, data in photos.items():
            (inbox / f".{name}.part").write_bytes(data)  # ignored while being written
        fill(small_disk / "filler")
        for name in photos:
            os.rename(inbox / f".{name}.part", inbox / name)

        def beat_with(predicate):
            return next((b["body"] for b in reversed(beats.received) if predicate(b["body"])), None)

        full = wait_for(lambda: beat_with(lambda b: b.get("disk_full")), 60, what="a heartbeat with disk_full")
        assert full["store_error"].startswith("disk full") and full["disk_free_bytes"] < 64 * 1024
        status = wait_for(lambda: [s for s in notify.lines("STATUS=") if "disk full" in s], 30,
                          what="STATUS saying disk full")
        assert status[-1].startswith("STATUS=INBOX STOPPED, disk full")
        seen = len(beats.received)
        wait_for(lambda: len(beats.received) >= seen + 2, 30, what="heartbeats going on while full")
        assert agent.proc.poll() is None, "fed-agent exited on a full disk"

        (small_disk / "filler").unlink()
        done = wait_for(lambda: beat_with(lambda b: not b.get("disk_full") and b["images"]["pending"] == 0
                                          and b["images"]["labels"]["head"]["train"]
                                          + b["images"]["labels"]["head"]["test"] == len(photos)),
                        60, what="ingest finished after space was freed")
        assert done["store_error"] is None
    finally:
        agent.stop()
        beats.close()
        notify.close()
    stored = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (small_disk / "data").rglob("*.jpg")}
    assert stored == {hashlib.sha256(data).hexdigest() for data in photos.values()}
    assert (small_disk / "data" / ".index.json").read_text().count('"sha256"') == len(photos)
    assert not list((small_disk / "inbox").rglob("*.jpg"))
