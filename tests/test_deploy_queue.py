"""The deploy queue: a failed deploy stays pending across a restart and is retried later; the
optional Linux runner (.eim) is recorded in the result and shown by `fedctl deploys`."""

import hashlib
import json
import time

import pytest
import structlog

from conftest import wait_for
from ei_standin import EIStandIn
from fed_coordinator.config import EdgeImpulseSection
from fed_coordinator.deploy.worker import DeployWorker
from fed_coordinator.fedctl.main import main as fedctl
from fed_coordinator.models.registry import ModelRegistry
from fed_coordinator.state import State


@pytest.fixture(scope="module")
def tiny_model_bytes():
    pytest.importorskip("edgeimpulse", reason="the edgeimpulse SDK is installed by `make test`")
    import keras

    from fed_coordinator.models.keras_model import to_tflite_float32

    inputs = keras.Input((160, 160, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inputs))
    return to_tflite_float32(keras.Model(inputs, outputs))


@pytest.fixture
def setup(tmp_path, tiny_model_bytes):
    reg = ModelRegistry(tmp_path / "models")

    def build(folder):
        (folder / "model_float32.tflite").write_bytes(tiny_model_bytes)
        return {"labels": ["head", "hardhat"]}

    reg.register(build)
    with EIStandIn() as standin:
        key_file = tmp_path / "ei.key"
        key_file.write_text(standin.api_key)
        key_file.chmod(0o600)
        cfg = EdgeImpulseSection(api_key_file=key_file, endpoint=standin.endpoint, targets=["zip"],
                                 connect_timeout=2, read_timeout=10, job_timeout=30,
                                 retry_initial_seconds=1, retry_max_seconds=4)
        yield tmp_path, reg, standin, cfg


def worker(path, reg, cfg):
    st = State(path / "coordinator.db")  # where fedctl --state-dir looks
    st.recover()
    return st, DeployWorker(st, reg, cfg, structlog.get_logger())


def test_failed_build_stays_pending_across_restart_then_succeeds(setup):
    path, reg, standin, cfg = setup
    st, w = worker(path, reg, cfg)
    st.deployment_queued(1)
    standin.build_fails = True
    w.process_due()
    dep = st.deployments()[0]
    assert dep["status"] == "pending" and dep["attempts"] == 1
    assert dep["last_error"] and dep["next_attempt_at"] > time.time()
    assert not (reg.path(1) / "edge-impulse" / "zip").exists()  # no artifact accepted
    st.close()  # the coordinator restarts

    st, w = worker(path, reg, cfg)
    builds = len(standin.builds)
    w.process_due()  # not due yet: no retry storm after a restart
    assert st.deployments()[0]["attempts"] == 1 and len(standin.builds) == builds
    standin.build_fails = False
    due = st.deployments()[0]["next_attempt_at"]
    wait_for(lambda: time.time() >= due, 10, interval=0.1, what="retry time")
    w.process_due()
    dep = st.deployments()[0]
    assert dep["status"] == "succeeded" and dep["attempts"] == 2
    result = json.loads(dep["result"])
    assert result["deployment_versions"]["zip"] >= 2
    assert (reg.path(1) / "edge-impulse" / "zip").is_dir()


def test_bad_key_fails_without_retrying(setup):
    path, reg, standin, cfg = setup
    cfg.api_key_file.write_text("not-the-key")
    st, w = worker(path, reg, cfg)
    st.deployment_queued(1)
    w.process_due()
    dep = st.deployments()[0]
    assert dep["status"] == "failed" and dep["attempts"] == 1
    assert "rejected the API key" in dep["last_error"] and "not-the-key" not in dep["last_error"]


def deploys(path, capsys, *flags):
    capsys.readouterr()
    assert fedctl(["--state-dir", str(path), *flags, "deploys"]) == 0
    return capsys.readouterr().out


def test_offered_runner_is_recorded_in_the_result_and_shown_by_fedctl(setup, capsys):
    path, reg, standin, cfg = setup
    standin.eim_body = b"\x7fELF" + b"stand-in runner body" * 1000
    st, w = worker(path, reg, cfg)
    st.deployment_queued(1)
    w.process_due()
    dep = st.deployments()[0]
    assert dep["status"] == "succeeded", dep["last_error"]
    eim_file = reg.path(1) / "edge-impulse" / "runner-linux-aarch64.eim"
    assert eim_file.read_bytes() == standin.eim_body
    sha = hashlib.sha256(standin.eim_body).hexdigest()
    record = json.loads(dep["result"])["eim"]
    assert record == {"target": "runner-linux-aarch64", "status": "stored", "path": str(eim_file),
                      "bytes": len(standin.eim_body), "sha256": sha, "deployment_version": 3}
    assert f"runner-linux-aarch64.eim 20.0 kB sha256 {sha[:12]}" in deploys(path, capsys)
    assert json.loads(deploys(path, capsys, "--json"))["deployments"][0]["eim"] == record


@pytest.mark.parametrize("case", ["not offered", "off"])
def test_no_runner_still_succeeds(case, setup, capsys):
    path, reg, standin, cfg = setup
    if case == "not offered":
        standin.offered_targets = ["zip", "wasm"]
    else:
        cfg.eim_target = None
    st, w = worker(path, reg, cfg)
    st.deployment_queued(1)
    w.process_due()
    dep = st.deployments()[0]
    assert dep["status"] == "succeeded" and dep["attempts"] == 1, dep["last_error"]
    assert [b["target"] for b in standin.builds] == ["zip"]
    assert not (reg.path(1) / "edge-impulse" / "runner-linux-aarch64.eim").exists()
    record = json.loads(dep["result"])["eim"]
    if case == "off":
        assert record is None
        return
    assert record == {"target": "runner-linux-aarch64", "status": "not_offered",
                      "note": "runner-linux-aarch64 not offered by the project"}
    assert "runner-linux-aarch64 not offered by the project" in deploys(path, capsys)
