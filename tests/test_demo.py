"""`make demo` is the product: real fed-coordinator and fed-agent daemons on loopback.

Runs the demo's console script on a small copy of the shared photos (one short round) and
then checks what the README promises afterwards: the status page address was printed, the
photos went through the agents' inboxes into their image stores, and every fedctl command
the README shows answers against the demo's state folder.
"""

import json
import subprocess

import pytest

from conftest import REPO, WEIGHTS, copy_small_dataset, needs_agent_venv, needs_shared
from fed_common.store import ImageStore, StoreLayout

pytestmark = [needs_shared, needs_agent_venv]
BIN = REPO / ".venv" / "bin"
LABELS = ["head", "hardhat"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data = copy_small_dataset(root / "data", per_label=12)
    work = root / "work"
    proc = subprocess.run([str(BIN / "fed-demo"), "--data", str(data), "--weights", str(WEIGHTS),
                           "--work", str(work), "--rounds", "1", "--epochs", "2"],
                          capture_output=True, text=True, timeout=1200)
    return proc, work, data


def fedctl(work, *args):
    proc = subprocess.run([str(BIN / "fedctl"), "--state-dir", str(work / "state"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_demo_runs_a_campaign_through_the_real_daemons(demo):
    proc, work, _ = demo
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "status page: http://127.0.0.1:" in proc.stdout
    assert "round 1: server accuracy" in proc.stdout
    campaigns = json.loads(fedctl(work, "--json", "campaigns"))["campaigns"]
    assert campaigns[0]["status"] == "completed" and campaigns[0]["trigger"] == "run-now"


def test_demo_photos_went_through_the_inboxes(demo):
    proc, work, data = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    for index in (1, 2):
        photos = sorted((data / f"dataset_client{index}").rglob("*.jpg"))
        layout = StoreLayout(work / "agents" / f"pi-{index}" / "state")
        store = ImageStore(layout.data_dir)
        entries = [entry for split in ("train", "test") for entry in store.entries(split, LABELS)]
        assert len(entries) == len(photos) > 0  # every photo stored, none lost or doubled
        assert not any(path.is_file() for path in layout.inbox_dir.rglob("*"))


def test_readme_fedctl_commands_answer_against_the_demo(demo):
    proc, work, _ = demo
    assert proc.returncode == 0, proc.stderr[-3000:]
    models = json.loads(fedctl(work, "--json", "models"))
    assert models["champion"] == models["models"][0]["version"]
    agents = json.loads(fedctl(work, "--json", "fleet"))["agents"]
    assert sorted(agent["name"] for agent in agents) == ["pi-1", "pi-2"]
    assert all(agent["images"]["labels"].keys() == set(LABELS) for agent in agents)
    photo = next((work.parent / "data" / "dataset_server" / "test" / "head").iterdir())
    assert fedctl(work, "predict", str(photo)).split("\t")[1] in ("head", "hardhat")
