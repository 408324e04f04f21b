"""EdgeImpulseDeployer: the real `edgeimpulse` SDK against the loopback stand-in (ei_standin.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
import urllib.request
import zipfile

import pytest
import structlog

from ei_standin import EIStandIn
from fed_coordinator.deploy.edge_impulse import DeployError, EdgeImpulseDeployer, read_api_key

LABELS = ["empty", "person"]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny real float32 TFLite classifier: 160x160x3 pixels in, 2 probabilities out."""
    pytest.importorskip("edgeimpulse")  # the slow import (TensorFlow), paid once here
    import keras

    from fed_coordinator.models.keras_model import to_tflite_float32

    inputs = keras.Input((160, 160, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax")(x)
    path = tmp_path_factory.mktemp("model") / "model_float32.tflite"
    path.write_bytes(to_tflite_float32(keras.Model(inputs, outputs)))
    return path


@pytest.fixture
def standin():
    with EIStandIn() as server:
        yield server


@pytest.fixture
def events():
    with structlog.testing.capture_logs() as captured:
        yield captured


def make(standin, key=None, **kw):
    kw = {"connect_timeout": 2, "read_timeout": 10, "job_timeout": 30, "backoff": 0.05, **kw}
    return EdgeImpulseDeployer(key or standin.api_key, endpoint=standin.endpoint, **kw)


def named(events, name):
    return [e for e in events if e["event"] == name]


def test_success_stores_new_version_profile_and_executable_eim(standin, model_file, tmp_path,
                                                              events, caplog):
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "v0007"
    result = make(standin, targets=("zip", "runner-linux-aarch64")).deploy(model_file, LABELS, out)

    assert standin.last_upload == model_file.read_bytes()
    assert standin.saved == {"input": {"inputType": "image", "inputScaling": "0..255"},
                             "model": {"modelType": "classification", "labels": LABELS}}
    assert [b["request"] for b in standin.builds] == [
        {"engine": "tflite", "modelType": "float32"}] * 2
    assert result.deployment_versions == {"zip": 2, "runner-linux-aarch64": 3}
    # the exact versions were downloaded, not "latest"
    assert standin.count(r"/deployment/history/2/download$") == 1
    assert standin.count(r"/deployment/history/3/download$") == 1

    zip_path = out / "edge-impulse" / "zip" / "ei-standin-zip-v2.zip"
    assert result.artifacts["zip"] == str(zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        meta = json.loads(zf.read("deployment.json"))
    assert meta["deploymentVersion"] == 2  # the NEW build, not the seeded v1
    assert meta["model_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()

    eim = out / "edge-impulse" / "runner-linux-aarch64" / "model.eim"
    assert result.artifacts["runner-linux-aarch64"] == str(eim)
    assert eim.read_bytes().startswith(b"\x7fELF") and b"deploymentVersion=3" in eim.read_bytes()
    assert stat.S_IMODE(eim.stat().st_mode) == 0o755 and os.access(eim, os.X_OK)

    assert result.profile_path == str(out / "edge-impulse" / "profile.json")
    stored = json.loads((out / "edge-impulse" / "profile.json").read_text())
    assert stored == result.profile_summary
    assert stored["device"] == "raspberry-pi-4" and stored["float32"]["device"] == "raspberry-pi-4"
    assert stored["float32"]["timePerInferenceMs"] == 42
    assert stored["deployment_versions"] == result.deployment_versions
    assert not [p for p in out.rglob(".*tmp*")]

    assert [e["event"] for e in events if e["event"] in
            ("ei_validate", "ei_profile", "ei_build", "ei_download")] == [
        "ei_validate", "ei_profile", "ei_build", "ei_download", "ei_build", "ei_download"]
    assert [(e["target"], e["version"]) for e in named(events, "ei_download")] == [
        ("zip", 2), ("runner-linux-aarch64", 3)]
    # the stand-in, like the service, returns the key in the project info: never logged
    assert "Using API host" in caplog.text  # the SDK's own DEBUG lines were captured
    assert standin.api_key not in caplog.text and standin.api_key not in repr(events)


def test_500_once_is_retried(standin, model_file, tmp_path, events):
    standin.fail_next(r"/pretrained-model/upload$", 500)
    result = make(standin).deploy(model_file, LABELS, tmp_path)
    assert result.deployment_versions == {"zip": 2}
    # profile: failed upload + retried upload; deploy: one upload
    assert standin.count(r"/pretrained-model/upload$", "POST") == 3
    assert [(e["step"], e["attempt"]) for e in named(events, "ei_retry")] == [("profile", 1)]


def test_429_on_build_post_honours_retry_after(standin, model_file, tmp_path, events):
    standin.fail_next(r"/jobs/build-ondevice-model$", 429, retry_after=1, method="POST")
    t0 = time.monotonic()
    result = make(standin, backoff=0.01).deploy(model_file, LABELS, tmp_path)
    assert time.monotonic() - t0 >= 1.0  # waited Retry-After, not the 0.01 s backoff
    assert result.deployment_versions == {"zip": 2}
    assert standin.count(r"/jobs/build-ondevice-model$", "POST") == 2
    retry = named(events, "ei_retry")
    assert [(e["step"], e["delay"]) for e in retry] == [("build", 1.0)]
    assert "HTTP 429" in retry[0]["error"]


def test_hung_server_is_bounded_by_read_timeout(standin, model_file, tmp_path):
    standin.hang(r"/jobs/\d+/status$", 30)
    t0 = time.monotonic()
    with pytest.raises(DeployError) as info:
        deployer = make(standin, read_timeout=2, max_attempts=2, backoff=0.2)
        deployer.deploy(model_file, LABELS, tmp_path)
    elapsed = time.monotonic() - t0
    assert info.value.retryable is True
    assert "timed out" in str(info.value).lower()
    assert elapsed < 10, elapsed
    assert standin.count(r"/jobs/\d+/status$") == 2  # one per attempt: no urllib3 retries
    assert not (tmp_path / "edge-impulse").exists()


@pytest.mark.parametrize("older_artifact", [True, False])
def test_failed_build_is_not_accepted(older_artifact, model_file, tmp_path, events):
    with EIStandIn(seed_history=older_artifact) as standin:
        standin.build_fails = True
        with pytest.raises(DeployError) as info:
            make(standin).deploy(model_file, LABELS, tmp_path)
    assert info.value.retryable is True
    assert "build job" in str(info.value) and "failed" in str(info.value)
    assert standin.builds[-1]["ok"] is False
    # the SDK fetched "latest": the older v1, or a 404 if there is none. We neither downloaded
    # nor stored anything
    assert standin.count(r"/deployment/download$") == 1
    assert standin.count(r"/deployment/history/\d+/download$") == 0
    assert standin.count(r"/jobs/build-ondevice-model$", "POST") == 1  # no immediate rebuild
    assert not (tmp_path / "edge-impulse").exists()
    assert not named(events, "ei_download")


def test_job_over_job_timeout_is_cancelled_and_retryable(standin, model_file, tmp_path):
    make(standin).deploy(model_file, LABELS, tmp_path / "first")  # builds v2
    standin.job_polls = 1000  # from now on no job finishes
    t0 = time.monotonic()
    with pytest.raises(DeployError) as info:
        make(standin, job_timeout=1.5).deploy(model_file, LABELS, tmp_path / "second")
    assert info.value.retryable is True and "timed out" in str(info.value)
    assert time.monotonic() - t0 < 10
    assert standin.count(r"/jobs/\d+/cancel$", "POST") == 1  # the SDK cancelled it
    assert standin.count(r"/pretrained-model/upload$") == 3  # no immediate second try
    assert not (tmp_path / "second").exists()


def test_bad_api_key_fails_fast_and_is_never_shown(standin, model_file, tmp_path, events, caplog):
    caplog.set_level(logging.DEBUG)
    bad = "ei_wrong_key_5f4dcc3b5aa765d61d8327deb882cf99"
    with pytest.raises(DeployError) as info:
        make(standin, key=bad).deploy(model_file, LABELS, tmp_path)
    assert info.value.retryable is False
    assert "Edge Impulse rejected the API key (HTTP 401)" in str(info.value)
    assert standin.total_requests <= 2
    text = "".join([str(info.value), repr(info.value), str(info.value.__cause__),
                    str(info.value.__context__), caplog.text, repr(events)])
    assert bad not in text
    assert bad not in repr(make(standin, key=bad))


def test_unknown_target_rejected_before_upload(standin, model_file, tmp_path):
    with pytest.raises(DeployError) as info:
        make(standin, targets=("zip", "no-such-board")).deploy(model_file, LABELS, tmp_path)
    assert info.value.retryable is False
    assert "no-such-board" in str(info.value) and "runner-linux-aarch64" in str(info.value)
    assert standin.count(r"/pretrained-model/upload$") == 0
    assert standin.count(r"/jobs/") == 0


def test_read_api_key(tmp_path):
    path = tmp_path / "ei.key"
    assert read_api_key(path) is None
    path.write_text("ei_secret_key\n")
    path.chmod(0o644)
    with pytest.raises(DeployError) as info:
        read_api_key(path)
    assert info.value.retryable is False and "0600" in str(info.value)
    assert "ei_secret_key" not in str(info.value)
    path.chmod(0o600)
    assert read_api_key(str(path)) == "ei_secret_key"
    path.write_text("  \n")
    with pytest.raises(DeployError, match="empty"):
        read_api_key(path)


def test_standin_answers_validate_against_sdk_models(standin, model_file, tmp_path):
    """The stand-in's JSON passes the SDK's own strict (pydantic) response models."""
    import edgeimpulse_api.models as m

    make(standin).deploy(model_file, LABELS, tmp_path)
    pid, job = standin.project_id, standin.builds[-1]["job"]

    def call(path, method="GET", body=None):
        req = urllib.request.Request(f"{standin.endpoint}/api{path}", method=method,
                                     headers={"x-api-key": standin.api_key,
                                              "Content-Type": "application/json"},
                                     data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    checks = [
        (m.ListProjectsResponse, call("/projects")),
        (m.ProjectInfoResponse, call(f"/{pid}")),
        (m.GetPretrainedModelResponse, call(f"/{pid}/pretrained-model")),
        (m.StartJobResponse, call(f"/{pid}/pretrained-model/profile", "POST")),
        (m.GenericApiResponse, call(f"/{pid}/pretrained-model/save", "POST", standin.saved)),
        (m.DeploymentTargetsResponse, call(f"/{pid}/deployment/targets/data-sources")),
        (m.BuildOnDeviceModelResponse, call(f"/{pid}/jobs/build-ondevice-model?type=zip", "POST",
                                            {"engine": "tflite", "modelType": "float32"})),
        (m.GetJobResponse, call(f"/{pid}/jobs/{job}/status")),
        (m.LogStdoutResponse, call(f"/{pid}/jobs/{job}/stdout")),
        (m.GenericApiResponse, call(f"/{pid}/jobs/{job}/cancel?forceCancel=true", "POST")),
    ]
    for model, doc in checks:
        assert doc["success"] is True, (model, doc)
        model.parse_obj(doc)  # raises on any missing or mistyped field


def test_session_redacts_sdk_logs_and_restores_sdk_globals(standin, model_file, caplog):
    import edgeimpulse as ei

    from fed_coordinator.deploy.ei_http import sdk_session

    before = (ei.API_KEY, ei.API_ENDPOINT)
    with sdk_session(standin.api_key, standin.endpoint, 2, 2):
        assert (ei.API_KEY, ei.API_ENDPOINT) == (standin.api_key, standin.endpoint)
        # what edgeimpulse_api logs with its debug switch on: a body holding the project key
        logging.getLogger("edgeimpulse_api.rest").warning(
            "response body: %s", json.dumps({"developmentKeys": {"apiKey": standin.api_key}}))
    assert '"apiKey": "***"' in caplog.text and standin.api_key not in caplog.text
    assert (ei.API_KEY, ei.API_ENDPOINT) == before


# -- the optional Linux runner (.eim) next to the model -----------------------------------------
EIM = "runner-linux-aarch64"
EIM_BODY = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 9000  # > 2 MiB: read in several chunks


def temp_files(folder):
    return [p for p in folder.rglob(".*") if p.name.endswith(".tmp")]


def test_offered_runner_is_stored_next_to_model_with_its_size_and_sha256(standin, model_file,
                                                                         tmp_path, events):
    standin.eim_body = EIM_BODY
    out = tmp_path / "v0003"
    # listed in targets too (as older configs do): still built once, as the optional extra
    result = make(standin, targets=("zip", EIM), eim_target=EIM).deploy(model_file, LABELS, out)

    eim_file = out / "edge-impulse" / f"{EIM}.eim"
    assert eim_file.read_bytes() == EIM_BODY
    assert stat.S_IMODE(eim_file.stat().st_mode) == 0o755
    assert result.eim == {"target": EIM, "status": "stored", "path": str(eim_file),
                          "bytes": len(EIM_BODY), "sha256": hashlib.sha256(EIM_BODY).hexdigest(),
                          "deployment_version": 3}
    assert [b["target"] for b in standin.builds] == ["zip", EIM]
    assert standin.count(r"/deployment/history/3/download$") == 1  # that exact build
    assert result.artifacts == {"zip": str(out / "edge-impulse" / "zip" / "ei-standin-zip-v2.zip")}
    assert not (out / "edge-impulse" / EIM).exists() and not temp_files(out)
    assert named(events, "ei_eim_stored")[0]["sha256"] == result.eim["sha256"]


def test_project_without_the_runner_records_a_note_and_still_deploys(standin, model_file,
                                                                     tmp_path, events):
    standin.offered_targets = ["zip", "wasm"]
    result = make(standin, eim_target=EIM).deploy(model_file, LABELS, tmp_path)

    assert result.eim == {"target": EIM, "status": "not_offered",
                          "note": "runner-linux-aarch64 not offered by the project"}
    assert result.deployment_versions == {"zip": 2}
    assert (tmp_path / "edge-impulse" / "zip" / "ei-standin-zip-v2.zip").is_file()
    assert [b["target"] for b in standin.builds] == ["zip"]  # never asked to build it
    assert not (tmp_path / "edge-impulse" / f"{EIM}.eim").exists()
    assert named(events, "ei_eim_not_offered")


def test_runner_is_off_when_eim_target_is_unset(standin, model_file, tmp_path):
    result = make(standin, eim_target=None).deploy(model_file, LABELS, tmp_path)
    assert result.eim is None and [b["target"] for b in standin.builds] == ["zip"]


def fail_build(standin):
    standin.build_fails_for = {EIM}


def cut_download(standin):  # every attempt at the runner's download dies halfway
    standin.cut_next(rf"/deployment/history/{standin.next_version + 1}/download$", times=3)


def oversized(standin):
    standin.eim_body = EIM_BODY + b"\0" * (4 << 20)


@pytest.mark.parametrize("failure, note", [(fail_build, "build job"),
                                           (cut_download, "network error"),
                                           (oversized, "over the 4194304-byte limit")])
def test_failed_runner_leaves_no_partial_file_and_deploy_succeeds(failure, note, standin,
                                                                  model_file, tmp_path, events):
    standin.eim_body = EIM_BODY
    good, fresh = tmp_path / "good", tmp_path / "fresh"
    make(standin, eim_target=EIM).deploy(model_file, LABELS, good)  # an earlier, complete build
    deployer = make(standin, eim_target=EIM, eim_max_bytes=4 << 20)
    for out in (good, fresh):
        failure(standin)
        result = deployer.deploy(model_file, LABELS, out)
        assert result.eim["status"] == "failed" and note in result.eim["note"], result.eim
        assert result.eim["note"].startswith("runner-linux-aarch64 not built: ")
        assert (out / "edge-impulse" / "zip").is_dir()  # the deploy itself succeeded
        assert not temp_files(out)
    assert (good / "edge-impulse" / f"{EIM}.eim").read_bytes() == EIM_BODY  # untouched
    assert not (fresh / "edge-impulse" / f"{EIM}.eim").exists()
    assert len(named(events, "ei_eim_failed")) == 2


def test_capped_read_stops_a_body_without_content_length_once_over_the_limit():
    import io

    from urllib3.response import HTTPResponse

    from fed_coordinator.deploy.ei_http import _read_capped

    def response(size):
        return HTTPResponse(body=io.BytesIO(b"x" * size), headers={}, preload_content=False)

    assert _read_capped(response(3 << 20), 3 << 20, 7) == b"x" * (3 << 20)
    body = response(3 << 20)
    with pytest.raises(DeployError, match="deploymentVersion 7 is over the 2097152-byte limit"):
        _read_capped(body, 2 << 20, 7)
    assert body.tell() <= (2 << 20) + (1 << 20)  # stopped reading: at most one chunk past it
