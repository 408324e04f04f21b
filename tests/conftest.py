"""Shared test fixtures: where the repo, the venvs and ../shared live."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FED_SHARED", REPO.parent / "shared"))
WEIGHTS = SHARED / "models" / "mobilenet_v2_1.00_160_no_top.weights.h5"
PHOTOS = SHARED / "datasets"
AGENT_PYTHON = REPO / ".venv-agent" / "bin" / "python"

from fed_demo.local_fleet import free_port  # noqa: E402,F401 - the tests' one free_port

def pytest_configure(config):
    config.addinivalue_line("markers", "system: boots real systemd hosts (systemd-nspawn) and "
                            "provisions them with the real playbook; needs root")


# `make test` runs the files on two xdist workers (--dist loadfile: a file stays on one
# worker, so module fixtures run once; --no-loadscope-reorder: this order, not xdist's
# "most tests first"). The system test (about 10 minutes, mostly waiting on Ansible and
# systemd) goes first so it overlaps with all the rest instead of ending the run alone. xdist
# tops a worker up while it has <= 2 tests pending, so the file after the longest ones is a
# quick one with several tests: the system test's worker then holds nothing else back.
LONGEST_FIRST = ["test_system_provision.py", "test_arm64_agent.py", "test_aggregation.py",
                 "test_champion_gate.py", "test_campaign_faults.py", "test_pi_health_campaign.py", "test_coordinator_service.py",
                 "test_campaign_e2e.py",
                 "test_rollout_fleet.py", "test_rollout_waits_for_training.py", "test_demo.py",
                 "test_agent_disk_full.py", "test_agent_inbox_daemon.py", "test_agent_daemon.py"]


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a file stays as written


needs_shared = pytest.mark.skipif(
    not (WEIGHTS.is_file() and (PHOTOS / "dataset_client1").is_dir()),
    reason=f"needs the shared photos and backbone weights under {SHARED}",
)
# The agent's two TFLite backends, each in its own venv (Makefile): the ClientApp and
# inference tests run under both.
AGENT_BACKENDS = {"tflite-runtime": REPO / ".venv-agent" / "bin",
                  "ai-edge-litert": REPO / ".venv-agent-litert" / "bin"}


def backend_params() -> list:
    """pytest params, one per backend venv, skipped (with the reason) where it was not made."""
    return [pytest.param(name, marks=pytest.mark.skipif(
        not (bin_dir / "python").exists(), reason=f"needs {bin_dir.parent.name} (made by `make test`)"),
        id=name) for name, bin_dir in AGENT_BACKENDS.items()]


needs_agent_venv = pytest.mark.skipif(
    not AGENT_PYTHON.exists(), reason="needs the agent venv (.venv-agent, made by `make test`)"
)


@pytest.fixture(scope="session")
def agent_artifacts(tmp_path_factory) -> Path:
    """backbone.tflite + trainer.tflite exported from the shared weights (once per session)."""
    if not WEIGHTS.is_file():
        pytest.skip(f"needs {WEIGHTS}")
    from fed_coordinator.models.artifacts import export_agent_artifacts

    return export_agent_artifacts(str(WEIGHTS), 2, tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="session")
def tflite_model() -> bytes:
    """A tiny real TFLite classifier (160x160x3 -> 2 softmax outputs), made by TensorFlow."""
    import tensorflow as tf

    inputs = tf.keras.Input((160, 160, 3))
    pooled = tf.keras.layers.GlobalAveragePooling2D()(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2, activation="softmax")(pooled))
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def flower_app_with_client(dst: Path, module: str) -> Path:
    """fedapp's Flower App with tests/<module>.py as its ClientApp (shipped in the FAB, so the
    SuperNodes run it from their own environment)."""
    import shutil

    text = (REPO / "fedapp" / "pyproject.toml").read_text()
    text = text.replace('name = "fedapp"', f'name = "fedapp-{module.replace("_", "-")}"')
    text = text.replace('clientapp = "fedapp.client_app:app"', f'clientapp = "{module}:app"')
    assert f"{module}:app" in text
    dst.mkdir(parents=True)
    (dst / "pyproject.toml").write_text(text)
    shutil.copy(REPO / "tests" / f"{module}.py", dst / f"{module}.py")
    return dst


def copy_small_dataset(dst: Path, per_label: int = 20) -> Path:
    """The shared layout with `per_label` training photos per label per client (short rounds)."""
    import shutil

    for client in ("dataset_client1", "dataset_client2"):
        for label in ("head", "hardhat"):
            out = dst / client / "train" / label
            out.mkdir(parents=True)
            for f in sorted((PHOTOS / client / "train" / label).iterdir())[:per_label]:
                shutil.copy(f, out / f.name)
    shutil.copytree(PHOTOS / "dataset_server" / "test", dst / "dataset_server" / "test")
    return dst


def read_json_lines(path: Path, offset: int = 0) -> list[dict]:
    """A JSON-lines log from byte `offset` on; a line that is not JSON is kept as such."""
    import json

    with open(path, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"event": "<not json>", "line": line})
    return out


def apply_overrides(cfg: dict, overrides: dict) -> dict:
    """Test configs take keyword overrides as section__key=value."""
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        cfg.setdefault(section, {})[key] = value
    return cfg


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value or the deadline passes."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


sys.path.insert(0, str(REPO / "tests"))
