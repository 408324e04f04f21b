"""A real fed-agent with capture on and a camera stand-in (tests/camera_standin.py, real JPEGs):
frames arrive in inbox/unlabeled/, are classified by the running model and become pseudo
labels or review items; when the camera fails, the heartbeat and STATUS say so, the agent
keeps running and heartbeating, and the camera is used again once it works."""

from __future__ import annotations

import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_harness import AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config
from conftest import free_port, needs_agent_venv, wait_for
from fed_agent.model_store import ModelStore, models_root
from fed_common.heartbeat import Heartbeat
from field_models import blues, colour_model, file_photos, photo, reds, signed_model

pytestmark = needs_agent_venv
STANDIN = Path(__file__).with_name("camera_standin.py")


def latest_beat(beats) -> Heartbeat | None:
    return Heartbeat.model_validate_json(beats.received[-1]["raw"]) if beats.received else None


def test_captured_frames_are_classified_and_a_failing_camera_is_reported(tmp_path):
    state, key = tmp_path / "state", Ed25519PrivateKey.generate()
    file_photos(state, reds(3), blues(3))
    ModelStore(models_root(state), key.public_key()).install(signed_model(key, colour_model(True), 1),
                                                            colour_model(True))
    source, control = tmp_path / "camera-roll", tmp_path / "control"
    source.mkdir()
    control.mkdir()
    for i, colour in enumerate([(200, 20, 30), (20, 40, 230), (210, 30, 20), (128, 128, 128)]):
        (source / f"{i}.jpg").write_bytes(photo(colour, fmt="JPEG"))
    beats, notify = HeartbeatServer(), NotifySocket(tmp_path / "notify.sock")
    cfg = write_config(tmp_path / "agent.yaml", state, f"127.0.0.1:{free_port()}", beats.url, token_file(tmp_path),
                       free_port(), capture__enabled=True, capture__interval_seconds=1,
                       capture__command=[sys.executable, str(STANDIN), str(source), str(control), "{path}"],
                       capture__backoff_max_seconds=2)
    agent = AgentProcess(cfg, notify, tmp_path / "agent.log")
    try:
        beat = wait_for(lambda: (b := latest_beat(beats)) and b.images.pseudo >= 2 and b.images.review >= 1 and b,
                        60, what="captured frames made into pseudo labels and review items")
        assert beat.camera.state == "ok" and beat.camera.frames_today >= 3
        (control / "fail").touch()
        failing = wait_for(lambda: (b := latest_beat(beats)) and b.camera.state == "failing" and b, 30,
                           what="the heartbeat to report the failing camera")
        assert "exited 1: ERROR: *** no cameras available ***" in failing.camera.last_error
        wait_for(lambda: [s for s in notify.lines("STATUS=") if s.startswith("STATUS=CAMERA FAILING since")], 20,
                 what="STATUS to lead with the failing camera")
        posts = len(beats.received)
        wait_for(lambda: len(beats.received) >= posts + 2, 30, what="heartbeats going on")
        assert agent.proc.poll() is None
        (control / "fail").unlink()
        wait_for(lambda: (b := latest_beat(beats)) and b.camera.state == "ok" and b, 30,
                 what="the camera back to ok")
    finally:
        agent.stop()
        beats.close()
        notify.close()
    events = agent.events()
    assert any(e["event"] == "camera_failed" for e in events) and any(e["event"] == "camera_recovered" for e in events)
    assert any(e["event"] == "image_predicted" and e.get("human_label") is None for e in events)
