"""Field summaries posted to a real fed-coordinator come out in fedctl, /metrics and the status page.

A real fed-coordinator process (its API on loopback, the default `monitoring:` settings) gets
heartbeats with field summaries over HTTP with each agent's own token, as the agents send
them (a delta per accepted heartbeat, one model version each): pi-1 steady, pi-2 whose share
of low-confidence images jumps from 0.10 to 0.60. Then every reader an operator uses must
show the numbers and flag pi-2, and only pi-2, as drifting.
"""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from conftest import WEIGHTS, free_port
from coordinator_harness import CoordinatorProcess, fedctl, write_coordinator_config
from test_api_heartbeat import GOOD, get, post

DRIFT_REASON = "low-confidence share 0.60 in the latest 20 images, baseline 0.10 in 60 before (v3)"


def heartbeat(agent: str, images: int, low: int, version: int = 3, labeled: int = 0, correct: int = 0) -> bytes:
    field = {"model_version": version, "images": images, "predicted": {"hardhat": images - images // 2,
                                                                         "head": images // 2},
             "mean_confidence": 0.8 if images else None, "low_confidence": 0.6, "low_confidence_images": low,
             "labeled": labeled, "correct": correct}
    running = {"version": 3, "state": "ok", "desired_version": 3, "self_test_accuracy": 0.95, "self_test_images": 40}
    return json.dumps({**GOOD, "agent": agent, "running_model": running, "field": field}).encode()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("field")
    api_port = free_port()
    cfg = write_coordinator_config(root / "coordinator.yaml", root / "state", root, WEIGHTS, free_port(), api_port)
    coord = CoordinatorProcess(cfg, root / "coordinator.log")
    try:
        coord.wait_ready()
        api = f"http://127.0.0.1:{api_port}"
        for name in ("pi-1", "pi-2"):
            assert fedctl(cfg, "agent-add", name, "--token-file", str(root / name)).returncode == 0
        token = {name: (root / name).read_text().strip() for name in ("pi-1", "pi-2")}
        beats = [("pi-1", heartbeat("pi-1", 10, 10, version=2))]  # v2's last photos, before v3 ran
        beats += [("pi-1", heartbeat("pi-1", 10, 1, labeled=10, correct=9))] * 5
        beats += [("pi-2", heartbeat("pi-2", 10, 1))] * 6 + [("pi-2", heartbeat("pi-2", 10, 6))] * 2
        beats += [("pi-1", heartbeat("pi-1", 0, 0)), ("pi-2", heartbeat("pi-2", 0, 0))]  # nothing new
        for name, body in beats:
            assert post(api + "/api/v1/heartbeat", body, token[name])[0] == 200
        yield {"cfg": cfg, "api": api}
    finally:
        coord.stop()


def test_fedctl_fleet_has_the_field_numbers_and_flags_the_drifting_agent(service):
    out = fedctl(service["cfg"], "--json", "fleet")
    assert out.returncode == 0, out.stderr
    field = {row["name"]: row["field"] for row in json.loads(out.stdout)["agents"]}
    steady, drifting = field["pi-1"], field["pi-2"]
    assert (steady["model_version"], steady["images"], steady["low_confidence_images"]) == (3, 50, 5)  # v2 apart
    assert steady["low_confidence_share"] == pytest.approx(0.1) and steady["field_accuracy"] == pytest.approx(0.9)
    assert steady["mean_confidence"] == pytest.approx(0.8) and steady["predicted"] == {"hardhat": 25, "head": 25}
    assert not steady["drifting"] and steady["drift_reason"].startswith("steady: low-confidence share 0.10")
    assert drifting["drifting"] and drifting["drift_reason"] == DRIFT_REASON
    assert drifting["images"] == 80 and drifting["field_accuracy"] is None  # no human labels sent
    api_fleet = {row["name"]: row["field"] for row in json.loads(get(service["api"] + "/api/v1/fleet")[1])["agents"]}
    assert api_fleet == field
    table = {line.split()[0]: line for line in fedctl(service["cfg"], "fleet").stdout.splitlines()[1:]}
    assert "50 img, 10% low, acc 0.90" in table["pi-1"] and "DRIFT" not in table["pi-1"]
    assert "v3 ok, self-test 0.95 (40 img)" in table["pi-1"]
    assert "80 img, 22% low" in table["pi-2"] and f"DRIFT {DRIFT_REASON}" in table["pi-2"]
    assert json.loads(fedctl(service["cfg"], "--json", "status").stdout)["agents_drifting"] == ["pi-2"]


def test_metrics_have_per_agent_field_gauges(service):
    status, text = get(service["api"] + "/metrics")
    assert status == 200
    for line in ('fed_agent_field_images{agent="pi-1"} 50.0', 'fed_agent_field_images{agent="pi-2"} 80.0',
                 'fed_agent_field_low_confidence_share{agent="pi-1"} 0.1',
                 'fed_agent_field_low_confidence_share{agent="pi-2"} 0.225',
                 'fed_agent_field_accuracy{agent="pi-1"} 0.9', 'fed_agent_field_mean_confidence{agent="pi-1"} 0.8',
                 'fed_agent_drifting{agent="pi-1"} 0.0', 'fed_agent_drifting{agent="pi-2"} 1.0',
                 'fed_agent_model_self_test_accuracy{agent="pi-2"} 0.95'):
        assert line in text.splitlines(), line
    assert 'fed_agent_field_accuracy{agent="pi-2"}' not in text  # no labeled images: no accuracy


def test_status_page_shows_the_numbers_a_chart_and_the_drift(service):
    with urllib.request.urlopen(service["api"] + "/", timeout=10) as resp:
        page = resp.read().decode()
        policy = resp.headers["Content-Security-Policy"]
    assert "script-src" not in policy and "unsafe-inline" not in policy
    assert "<script" not in page and " style=" not in page  # the CSP allows neither
    rows = dict(re.findall(r'<tr class="agent" data-agent="([^"]+)">(.*?)</tr>', page))
    assert "50 img, 10% low, acc 0.90" in rows["pi-1"] and "mean conf 0.80, v3, last 24 h" in rows["pi-1"]
    assert "v3 ok, self-test 0.95 (40 img)" in rows["pi-1"] and "DRIFT" not in rows["pi-1"]
    assert f'<td class="drift">DRIFT {DRIFT_REASON}</td>' in rows["pi-2"]
    for name in ("pi-1", "pi-2"):
        chart = re.search(r'<svg class="field-chart" data-agent="%s" data-hours="(\d+)".*?</svg>' % name, rows[name])
        assert chart and int(chart[1]) >= 1 and ("<circle" in chart[0] or "<polyline" in chart[0]), rows[name]
    assert 'class="baseline"' in rows["pi-2"]  # the baseline it was compared with, dashed
