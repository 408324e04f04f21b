"""A real fed-agent on a Pi that is under-voltage and hot: its heartbeat and STATUS= line.

The Pi is a fake `vcgencmd` on the agent's PATH (tests/pi_fakes.py) and a thermal folder
(`health.thermal_dir`); the heartbeat goes to a loopback endpoint and the STATUS= line to a
notify socket the test owns, as systemd would get it. When the Pi recovers, both follow.
"""

from __future__ import annotations

import re
import time

import pytest

from agent_harness import AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config
from conftest import free_port, needs_agent_venv, wait_for
from fed_common.heartbeat import Heartbeat
from pi_fakes import UNDER_VOLTAGE_AND_THROTTLED, FakeVcgencmd, thermal_dir

pytestmark = needs_agent_venv
NO_SYSFS = "/nonexistent/get_throttled"


@pytest.fixture
def pi(tmp_path, monkeypatch):
    fake = FakeVcgencmd(tmp_path, UNDER_VOLTAGE_AND_THROTTLED)
    monkeypatch.setenv("PATH", fake.path_env())  # the agent (and its SuperNode) inherit it
    thermal = thermal_dir(tmp_path / "thermal", 82.3)
    notify, beats = NotifySocket(tmp_path / "notify.sock"), HeartbeatServer()
    cfg = write_config(tmp_path / "agent.yaml", tmp_path / "state", f"127.0.0.1:{free_port()}", beats.url,
                       token_file(tmp_path), free_port(), health__thermal_dir=str(thermal),
                       health__throttled_file=NO_SYSFS)
    agent = AgentProcess(cfg, notify, tmp_path / "agent.log")
    yield {"fake": fake, "thermal": thermal, "notify": notify, "beats": beats, "agent": agent}
    agent.stop()
    beats.close()
    notify.close()


def _status(notify: NotifySocket, since: float, contains: str) -> str:
    return wait_for(lambda: [s for s in notify.lines("STATUS=", since) if contains in s], 40,
                    what=f"a STATUS= line with {contains!r}")[-1]


def _beat(beats: HeartbeatServer, since: float, condition) -> dict:
    return wait_for(lambda: [b["body"] for b in beats.received if b["time"] >= since and condition(b["body"])], 40,
                    what="a matching heartbeat")[-1]


def _first(problems: str, status: str) -> bool:
    """The Pi's problems come before the connection state (other checks may go first too)."""
    return re.search(rf"(^STATUS=|; ){re.escape(problems)}; reconnecting to 127\.0\.0\.1:", status) is not None


def test_under_voltage_and_heat_in_the_heartbeat_and_status_line(pi):
    notify, beats = pi["notify"], pi["beats"]
    status = _status(notify, 0, "UNDER-VOLTAGE")
    assert _first("UNDER-VOLTAGE now, THROTTLED now (throttled=0x50005); 82.3 °C >= training.max_temp_c 80.0",
                  status), status
    assert re.search(r"; SD [0-9]+\.[0-9] GB free(;|$)", status), status  # the heat is said first, not twice
    body = _beat(beats, 0, lambda b: b.get("pi_health"))
    assert body["pi_health"] == {"throttled": 0x50005, "source": "vcgencmd", "error": None, "max_temp_c": 80.0,
                                 "last_decline": None}
    assert body["cpu_temperature_c"] == 82.3 and body["disk_free_bytes"] > 0
    assert Heartbeat.model_validate(body).pi_health.words[:2] == ["under-voltage now", "throttled now"]

    pi["fake"].set(0x50000)  # the supply is fixed and the Pi cooled down; since boot stays set
    thermal_dir(pi["thermal"], 51.2)
    since = time.monotonic()
    status = _status(notify, since, "under-voltage since boot")  # the bits are re-read every 10 s
    assert _first("under-voltage since boot (throttled=0x50000)", status), status
    assert re.search(r"; 51\.2 °C, SD [0-9]+\.[0-9] GB free(;|$)", status), status  # the readings last
    assert "UNDER-VOLTAGE" not in status and ">= training.max_temp_c" not in status
    body = _beat(beats, since, lambda b: b["cpu_temperature_c"] == 51.2 and b["pi_health"]["throttled"] == 0x50000)
    assert Heartbeat.model_validate(body).pi_health.problems(51.2) == ["under-voltage since boot (throttled=0x50000)"]
