"""fed-agent refuses a bad config with exit 78 and a message naming the field."""

import subprocess

import pytest
import yaml

from agent_harness import AGENT_BIN
from conftest import needs_agent_venv

pytestmark = needs_agent_venv


def run(*args, **kw):
    return subprocess.run([str(AGENT_BIN / "fed-agent"), *args], capture_output=True, text=True,
                          timeout=60, **kw)


@pytest.fixture
def good(tmp_path):
    out = run("print-default-config")
    assert out.returncode == 0
    cfg = yaml.safe_load(out.stdout)
    cfg["agent"]["state_dir"] = str(tmp_path / "state")
    return cfg


def write(tmp_path, cfg):
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_default_config_validates(tmp_path, good):
    out = run("-c", str(write(tmp_path, good)), "validate-config")
    assert out.returncode == 0 and "valid" in out.stdout


@pytest.mark.parametrize("section,key,value,field", [
    ("coordinator", "superlink", "no-port-here", "coordinator.superlink"),
    ("coordinator", "heartbeat_url", "ftp://x", "coordinator.heartbeat_url"),
    ("agent", "name", "Bad Name!", "agent.name"),
    ("agent", "colour", "blue", "agent.colour"),
    ("heartbeat", "interval", 1, "heartbeat.interval"),
    ("inbox", "max_bytes", "abc", "inbox.max_bytes"),
    ("supernode", "port", 70000, "supernode.port"),
    ("logging", "level", "loud", "logging.level"),
])
def test_bad_field_exits_78_naming_it(tmp_path, good, section, key, value, field):
    good[section][key] = value
    path = write(tmp_path, good)
    for command in ("validate-config", "run"):
        out = run("-c", str(path), command)
        assert out.returncode == 78, out.stderr
        assert f"At '{field}':" in out.stderr


def test_bad_labels_and_missing_key(tmp_path, good):
    good["labels"] = ["head", "head"]
    del good["coordinator"]["superlink"]
    out = run("-c", str(write(tmp_path, good)), "run")
    assert out.returncode == 78
    assert "At 'labels':" in out.stderr and "At 'coordinator.superlink':" in out.stderr


def test_missing_and_unparsable_files(tmp_path):
    out = run("-c", str(tmp_path / "none.yaml"), "run")
    assert out.returncode == 78 and "none.yaml" in out.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  name: [unclosed\n")
    out = run("-c", str(bad), "run")
    assert out.returncode == 78 and "bad.yaml" in out.stderr and "line" in out.stderr
