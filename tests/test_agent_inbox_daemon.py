"""The running agent files inbox photos and its next heartbeat reports the counts."""

import io
import json

from PIL import Image

from agent_harness import AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config
from conftest import free_port, needs_agent_venv, wait_for

pytestmark = needs_agent_venv


def jpeg(color, size=(80, 80)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def test_inbox_files_land_where_they_should_and_heartbeat_counts_match(tmp_path):
    state = tmp_path / "state"
    beats, notify = HeartbeatServer(), NotifySocket(tmp_path / "notify.sock")
    token = token_file(tmp_path)
    # No SuperLink at all: the inbox and heartbeats must work while the Pi is offline.
    cfg = write_config(tmp_path / "agent.yaml", state, f"127.0.0.1:{free_port()}", beats.url,
                       token, free_port(), inbox__max_bytes=20_000)
    inbox = state / "inbox"
    for label in ("head", "hardhat"):
        (inbox / label).mkdir(parents=True)
    good = [jpeg((200, 30 * i, 10)) for i in range(4)]
    (inbox / "head" / "a.jpg").write_bytes(good[0])
    (inbox / "head" / "b.jpg").write_bytes(good[1])
    (inbox / "hardhat" / "c.jpg").write_bytes(good[2])
    (inbox / "head" / "z-dup.jpg").write_bytes(good[0])  # same photo as a.jpg, scanned after it
    (inbox / "head" / "corrupt.jpg").write_bytes(good[3][: len(good[3]) // 2])
    (inbox / "head" / "zero.jpg").write_bytes(b"")
    (inbox / "hardhat" / "text.jpg").write_text("hello")
    big = io.BytesIO()
    Image.effect_noise((400, 400), 80).convert("RGB").save(big, "PNG")
    (inbox / "hardhat" / "huge.png").write_bytes(big.getvalue())      # > max_bytes 20 kB
    (inbox / "cats").mkdir()
    (inbox / "cats" / "cat.jpg").write_bytes(jpeg((1, 2, 3)))
    agent = AgentProcess(cfg, notify, tmp_path / "agent.log")
    try:
        def settled_beat():
            for b in beats.received:
                if b["body"]["images"]["quarantined"] == 6:
                    return b
            return None

        beat = wait_for(settled_beat, 40, what="a heartbeat after the inbox scan")
    finally:
        agent.stop()
        beats.close()
        notify.close()
    images = beat["body"]["images"]
    assert {k: v["train"] + v["test"] for k, v in images["labels"].items()} == {"head": 2, "hardhat": 1}
    assert images["pending"] == 0
    stored = sorted(p.name for p in (state / "data").rglob("*.jpg"))
    assert len(stored) == 3
    reasons = {}
    for reason_file in (state / "quarantine").rglob("*.reason.json"):
        info = json.loads(reason_file.read_text())
        reasons[reason_file.name.removesuffix(".reason.json")] = info["reason"]
    assert set(reasons) == {"z-dup.jpg", "corrupt.jpg", "zero.jpg", "text.jpg", "huge.png", "cat.jpg"}
    assert reasons["z-dup.jpg"].startswith("duplicate of ")
    assert reasons["zero.jpg"] == "empty file"
    assert reasons["huge.png"].startswith("file too large")
    assert reasons["text.jpg"].startswith("not a readable image")
    assert reasons["corrupt.jpg"].startswith("not a readable image")
    assert reasons["cat.jpg"].startswith("unknown label 'cats'")
    # every quarantined file is still there next to its reason: nothing deleted
    for name in reasons:
        assert list((state / "quarantine").rglob(name))
    events = [json.loads(line) for line in (tmp_path / "agent.log").read_text().splitlines()]
    quarantined = [e for e in events if e["event"] == "image_quarantined"]
    assert len(quarantined) == 6 and all(e["agent"] == "pi-test" for e in quarantined)
