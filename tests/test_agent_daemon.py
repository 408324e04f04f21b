"""fed-agent for real: notify protocol, watchdog, SuperNode supervision, reconnects, heartbeats."""

import os
import signal
import time
from pathlib import Path

import pytest

from agent_harness import AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config
from conftest import free_port, needs_agent_venv, wait_for
from fed_agent.heartbeat import HeartbeatSender
from fed_common.heartbeat import Heartbeat, SupernodeStatus
from fed_coordinator.flower import FlwrCli, SuperLink

pytestmark = needs_agent_venv
SECRET = "tok-3f9a1c-never-in-logs"


@pytest.fixture
def fleet(tmp_path):
    link = SuperLink(tmp_path / "superlink", port=free_port()).start()
    notify = NotifySocket(tmp_path / "notify.sock")
    beats = HeartbeatServer()
    token = token_file(tmp_path, SECRET)
    cfg = write_config(tmp_path / "agent.yaml", tmp_path / "state", link.address, beats.url,
                       token, free_port())
    agent = AgentProcess(cfg, notify, tmp_path / "agent.log")
    cli = FlwrCli(tmp_path / "cli", link.address)
    yield {"link": link, "notify": notify, "beats": beats, "agent": agent, "cli": cli,
           "tmp": tmp_path}
    agent.stop()
    link.stop()
    beats.close()
    notify.close()


def online_nodes(cli) -> list[str]:
    return [n["node-id"] for n in cli.supernodes() if n["status"] == "online"]


def test_ready_status_watchdog_and_heartbeat(fleet):
    notify, agent = fleet["notify"], fleet["agent"]
    wait_for(lambda: notify.lines("READY=1"), 30, what="READY=1")
    wait_for(lambda: notify.lines("WATCHDOG=1"), 10, what="WATCHDOG=1")
    node = wait_for(lambda: online_nodes(fleet["cli"]), 30, what="node online")
    status = wait_for(lambda: [s for s in notify.lines("STATUS=") if s.startswith("STATUS=connected")],
                      30, what="STATUS=connected")
    assert fleet["link"].address in status[-1] and "no campaign yet" in status[-1]
    beat = wait_for(lambda: [b for b in fleet["beats"].received
                             if b["body"]["supernode"]["state"] == "connected"], 30, what="heartbeat")[0]
    assert beat["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = beat["body"]
    model = Heartbeat.model_validate(body)  # what the coordinator's API accepts, as sent
    assert model.schema_version == 1 and Heartbeat.model_validate_json(beat["raw"]) == model
    assert body["agent"] == "pi-test" and body["supernode"]["node_id"] == node[0]
    assert body["images"]["labels"] == {"head": {"train": 0, "test": 0},
                                        "hardhat": {"train": 0, "test": 0}}
    assert body["disk_free_bytes"] > 0 and body["memory"]["total_bytes"] > 0
    assert len(body["load"]) == 3 and "cpu_temperature_c" in body
    # the secret is nowhere in the logs or in any process's command line
    assert SECRET not in agent.log_path.read_text()
    for pid in [agent.proc.pid, *agent.children()]:
        assert SECRET not in Path(f"/proc/{pid}/cmdline").read_text()
    assert all(e["event"] != "<not json>" for e in agent.events())


class RecordingLog:
    """Collects (level, event, fields) like the structlog logger the sender is given."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict]] = []

    def __getattr__(self, level):
        return lambda event, **fields: self.events.append((level, event, fields))


def test_heartbeat_sender_survives_a_snapshot_that_cannot_be_built(tmp_path):
    """A snapshot that raises (a reading failing, a value outside the model) is a failed send
    with backoff, logged; the thread lives on and the next good snapshot is sent."""
    token = token_file(tmp_path, SECRET)
    good = Heartbeat(agent="pi-test", version="0.1.0", uptime_seconds=1.0,
                     supernode=SupernodeStatus(state="starting"))
    outcomes = [OSError("no /proc"), lambda: Heartbeat(agent="pi-test", version="x", uptime_seconds=-1,
                                                       supernode=SupernodeStatus(state="starting"))]

    def snapshot():
        if outcomes:
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome()
        return good

    beats, log = HeartbeatServer(), RecordingLog()
    sender = HeartbeatSender(beats.url, token, 0.1, 3, snapshot, log)
    sender.start()
    try:
        beat = wait_for(lambda: beats.received, 20, interval=0.05, what="a heartbeat after two failures")[0]
    finally:
        sender.stop()
        sender.join(5)
        beats.close()
    assert Heartbeat.model_validate_json(beat["raw"]) == good
    failed = [fields for _, event, fields in log.events if event == "heartbeat_failed"]
    assert len(failed) == 2
    assert "OSError: no /proc" in failed[0]["error"]
    assert "At 'uptime_seconds': must be at least 0" in failed[1]["error"]
    errors = [event for level, event, _ in log.events if level == "error"]
    assert errors == ["heartbeat_snapshot_failed", "heartbeat_invalid"]
    assert sender.sent >= 1 and sender.failures == 0


def test_superlink_restart_node_comes_back(fleet):
    link, cli = fleet["link"], fleet["cli"]
    before = wait_for(lambda: online_nodes(cli), 30, what="node online")
    os.killpg(link.proc.pid, signal.SIGKILL)
    link.proc.wait()
    wait_for(lambda: [s for s in fleet["notify"].lines("STATUS=") if "reconnecting" in s], 20,
             what="STATUS=reconnecting")
    time.sleep(3)  # keep it down for a few seconds, like a real outage
    restarted = SuperLink(link.state_dir, port=link.port).start()
    fleet["link"] = restarted
    t0 = time.monotonic()
    after = wait_for(lambda: online_nodes(cli), 30, what="node online after SuperLink restart")
    assert time.monotonic() - t0 < 30
    assert after == before  # same node id: the SuperLink kept it in its database
    restarted.stop()


def test_supernode_child_killed_is_restarted(fleet):
    agent = fleet["agent"]
    wait_for(lambda: online_nodes(fleet["cli"]), 30, what="node online")
    first = wait_for(agent.children, 10, what="SuperNode child")[0]
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: [p for p in agent.children() if p != first], 20, what="new child")[0]
    assert second != first
    exits = [e for e in agent.events() if e["event"] == "supernode_exited"]
    assert exits and exits[0]["reason"] == "killed by signal SIGKILL" and exits[0]["agent"] == "pi-test"
    wait_for(lambda: online_nodes(fleet["cli"]), 40, what="node online after child restart")


def test_frozen_loop_stops_watchdog_pings(fleet):
    notify, agent = fleet["notify"], fleet["agent"]
    wait_for(lambda: notify.lines("WATCHDOG=1"), 30, what="WATCHDOG=1")
    os.kill(agent.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(0.5)  # a ping already in flight may still land
        frozen_at = time.monotonic()
        time.sleep(4)
        assert notify.lines("WATCHDOG=1", since=frozen_at) == []
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    resumed_at = time.monotonic()
    wait_for(lambda: notify.lines("WATCHDOG=1", since=resumed_at), 5, what="pings after SIGCONT")


def test_sigterm_stops_cleanly(fleet):
    notify, agent = fleet["notify"], fleet["agent"]
    wait_for(lambda: notify.lines("READY=1"), 30, what="READY=1")
    child = wait_for(agent.children, 10, what="SuperNode child")[0]
    agent.proc.send_signal(signal.SIGTERM)
    assert agent.proc.wait(15) == 0
    assert notify.lines("STOPPING=1")
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()
