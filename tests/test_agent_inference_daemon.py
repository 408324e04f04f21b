"""A real fed-agent classifies the photo its inbox files: predictions.jsonl, its log line,
the site hook, and the heartbeat's field summary, kept while the coordinator refuses
heartbeats and taken off once one is accepted. The running model's self-test (on the Pi's
own photos, done before the agent started) is in every heartbeat."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent_harness import AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config
from conftest import free_port, needs_agent_venv, wait_for
from fed_common.heartbeat import Heartbeat
from field_models import blues, colour_model, file_photos, photo, reds, self_testing_store, signed_model

pytestmark = needs_agent_venv


def install_self_tested(state, key) -> int:
    """The Pi's own photos filed, then a good model installed, self-tested on them."""
    n = file_photos(state, reds(3), blues(3))
    data = colour_model(True)
    self_testing_store(state, key).install(signed_model(key, data, 1), data)
    return n


def test_a_filed_photo_is_predicted_logged_hooked_and_counted_until_a_heartbeat_is_accepted(tmp_path):
    state, key = tmp_path / "state", Ed25519PrivateKey.generate()
    tested_images = install_self_tested(state, key)
    public = tmp_path / "manifest.pub"
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    hook_out, script = tmp_path / "hook-argv.txt", tmp_path / "alert.py"
    script.write_text("import sys\nopen(sys.argv[1], 'w').write('\\n'.join(sys.argv[2:]))\n")
    beats, notify = HeartbeatServer(status=500), NotifySocket(tmp_path / "notify.sock")  # refused at first
    cfg = write_config(tmp_path / "agent.yaml", state, f"127.0.0.1:{free_port()}", beats.url, token_file(tmp_path),
                       free_port(), model__public_key_file=str(public), inference__on_label={
                           "head": {"command": [sys.executable, str(script), str(hook_out), "{label}", "{score}",
                                                "{path}"], "timeout": 20}})
    agent = AgentProcess(cfg, notify, tmp_path / "agent.log")
    predictions = state / "predictions.jsonl"
    try:
        wait_for(lambda: notify.lines("READY=1"), 30, what="READY=1")
        (state / "inbox" / "head" / "camera-0001.png").write_bytes(photo((210, 40, 35)))
        row = json.loads(wait_for(lambda: predictions.exists() and predictions.read_text(), 60,
                                  what="the photo's prediction line"))
        with_photo = lambda status: [b for b in beats.received  # noqa: E731
                                     if b["status"] == status and (b["body"]["field"] or {}).get("images")]
        refused = wait_for(lambda: len(with_photo(500)) >= 2 and with_photo(500), 60,
                           what="two refused heartbeats carrying the photo")
        beats.status = 200
        accepted = wait_for(lambda: with_photo(200), 60, what="an accepted heartbeat carrying the photo")[0]
        after = wait_for(lambda: [b for b in beats.received if b["status"] == 200 and b["time"] > accepted["time"]],
                         60, what="the heartbeat after the accepted one")[0]
        wait_for(lambda: hook_out.exists(), 30, what="the head hook to run")
        status = wait_for(lambda: [s for s in notify.lines("STATUS=") if "field 1 images" in s], 30,
                          what="STATUS with the field count")[-1]
    finally:
        agent.stop()
        beats.close()
        notify.close()
    stored = Path(row["path"])  # filed in the store first, then classified
    assert stored.is_relative_to(state / "data" / "train") or stored.is_relative_to(state / "data" / "test")
    assert stored.read_bytes() == photo((210, 40, 35)) and not list((state / "inbox").rglob("*.png"))
    assert (row["label"], row["human_label"], row["model_version"]) == ("head", "head", 1)
    assert row["confidence"] > 0.99 and len(row["sha256"]) == 64 and row["time"]
    # refused heartbeats keep the count; the accepted one carries it once; the next starts over
    for beat in [*refused, accepted]:
        field = Heartbeat.model_validate_json(beat["raw"]).field
        assert (field.model_version, field.images, field.predicted, field.labeled, field.correct) == (
            1, 1, {"head": 1}, 1, 1)
        assert field.low_confidence_images == 0 and field.mean_confidence == row["confidence"]
    later = Heartbeat.model_validate_json(after["raw"])
    assert (later.field.model_version, later.field.images) == (1, 0)
    model = later.running_model
    assert (model.version, model.self_test_accuracy, model.self_test_images) == (1, 1.0, tested_images)
    assert hook_out.read_text().splitlines() == ["head", f"{row['confidence']:.4f}", row["path"]]
    assert "field 1 images, 0% low confidence" in status
    logged = [e for e in agent.events() if e["event"] == "image_predicted"]
    assert all(e["event"] != "<not json>" for e in agent.events())  # the runtime's own output too
    assert len(logged) == 1 and logged[0]["agent"] == "pi-test"  # the worker thread names the agent too
    assert (logged[0]["model_version"], logged[0]["label"], logged[0]["confidence"]) == (1, "head", row["confidence"])
