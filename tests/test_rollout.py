"""The staged rollout's decisions on a real SQLite state, heartbeat by heartbeat.

The engine is driven with explicit clock values (`tick(now)`) so the canary window and the
canary timeout are exact here; the real processes (coordinator, agents) are exercised in
tests/test_rollout_fleet.py and the system test.
"""

from __future__ import annotations

from types import SimpleNamespace

import structlog

from fed_common.heartbeat import Heartbeat, RunningModel, SupernodeStatus
from fed_coordinator.config import RolloutSection
from fed_coordinator.models.rollout import RolloutRecord, Stage
from fed_coordinator.models.rollout_engine import RolloutEngine
from fed_coordinator.service.commands import CommandHandler
from fed_coordinator.state import State

WINDOW_MINUTES = 2


def beat(state: State, agent: str, version: int | None, model_state: str = "ok", desired: int | None = None,
         reason: str | None = None) -> None:
    running = RunningModel(version=version, state=model_state, desired_version=desired or version, reason=reason)
    heartbeat = Heartbeat(agent=agent, version="t", uptime_seconds=1.0,
                          supernode=SupernodeStatus(state="connected"), running_model=running)
    state.heartbeat(agent, heartbeat.model_dump_json(), "10.0.0.1")


def fleet_state(tmp_path, agents=("pi-a", "pi-b"), **settings) -> tuple[State, RolloutEngine]:
    state = State(tmp_path / "coordinator.db")
    for name in agents:
        state.add_agent(name)
        beat(state, name, None, "none")
    cfg = RolloutSection(canary_minutes=WINDOW_MINUTES, **settings)
    return state, RolloutEngine(state, cfg, 180, structlog.get_logger())


def champion(state: State, version: int) -> None:
    state.model_recorded(version, None, 0.9, "champion", "test")
    state.set_champion(version)


def test_canary_first_the_rest_after_the_canary_window(tmp_path):
    state, engine = fleet_state(tmp_path)
    champion(state, 1)
    engine.tick()
    rollout = engine.record.current()
    assert rollout.stage is Stage.CANARY and rollout.canaries == ("pi-a",)  # default: one agent
    assert engine.desired("pi-a") == 1 and engine.desired("pi-b") is None  # the other keeps what it runs
    start = rollout.started_at
    engine.tick(start + 30)
    assert engine.record.current().canary_ok_since is None  # the canary has not reported it yet
    beat(state, "pi-a", 1)
    engine.tick(start + 60)
    assert engine.record.current().canary_ok_since == start + 60
    engine.tick(start + 60 + WINDOW_MINUTES * 60 - 1)
    assert engine.record.current().stage is Stage.CANARY and engine.desired("pi-b") is None
    engine.tick(start + 60 + WINDOW_MINUTES * 60)
    assert engine.record.current().stage is Stage.COMPLETE
    assert engine.desired("pi-b") == 1 and "ran v1 for 2 minutes" in engine.record.current().reason


def test_a_canary_that_stops_reporting_ok_restarts_the_window(tmp_path):
    state, engine = fleet_state(tmp_path)
    champion(state, 1)
    engine.tick()
    start = engine.record.current().started_at
    beat(state, "pi-a", 1)
    engine.tick(start + 10)
    beat(state, "pi-a", None, "updating", desired=1)
    engine.tick(start + 20)
    assert engine.record.current().canary_ok_since is None
    engine.tick(start + 10 + WINDOW_MINUTES * 60)
    assert engine.record.current().stage is Stage.CANARY


def test_a_failing_canary_halts_it_and_the_fleet_stays_on_the_previous_version(tmp_path):
    state, engine = fleet_state(tmp_path)
    champion(state, 1)
    engine.tick()
    beat(state, "pi-a", 1)
    start = engine.record.current().started_at
    engine.tick(start + 1)
    engine.tick(start + 1 + WINDOW_MINUTES * 60)
    champion(state, 2)
    engine.tick(start + 200)
    assert engine.desired("pi-a") == 2 and engine.desired("pi-b") == 1
    beat(state, "pi-a", 1, "failed", desired=2, reason="sha256 of the file is 00ab.., the manifest says 77cd..")
    engine.tick(start + 210)
    halted = engine.record.current()
    assert halted.stage is Stage.HALTED and halted.version == 2
    assert halted.reason == "canary pi-a failed v2: sha256 of the file is 00ab.., the manifest says 77cd.."
    assert engine.desired("pi-a") == 1 and engine.desired("pi-b") == 1
    engine.tick(start + 10_000)  # stays halted: the same champion is not rolled out again
    assert engine.record.current().id == halted.id
    # The record is the database: a restarted coordinator sees the same.
    again = RolloutRecord(State(tmp_path / "coordinator.db"))
    assert again.current().stage is Stage.HALTED and again.desired("pi-b") == 1


def test_a_canary_that_never_reports_the_version_halts_it_at_the_timeout(tmp_path):
    state, engine = fleet_state(tmp_path, canary_timeout_minutes=5)
    champion(state, 1)
    engine.tick()
    start = engine.record.current().started_at
    engine.tick(start + 5 * 60)
    assert engine.record.current().stage is Stage.CANARY
    engine.tick(start + 5 * 60 + 1)
    assert engine.record.current().reason == "canary pi-a did not report v1 running within 5 minutes"


def test_canaries_by_name_or_fraction(tmp_path):
    state, engine = fleet_state(tmp_path, agents=("pi-a", "pi-b", "pi-c"), canaries=["pi-c"])
    champion(state, 1)
    engine.tick()
    assert engine.record.current().canaries == ("pi-c",)
    state2, by_fraction = fleet_state(tmp_path / "f", agents=("pi-a", "pi-b", "pi-c"), canary_fraction=0.5)
    champion(state2, 1)
    by_fraction.tick()
    assert by_fraction.record.current().canaries == ("pi-a", "pi-b")  # ceil(0.5 x 3)


def test_resume_says_a_halted_version_stays_halted(tmp_path):
    state, engine = fleet_state(tmp_path)
    handler = CommandHandler(state, None, campaigns=None, log=structlog.get_logger(), rollout=engine)
    champion(state, 1)
    engine.tick()
    beat(state, "pi-a", None, "failed", desired=1, reason="manifest signature does not verify")
    engine.tick()
    assert handler.answer("rollout-resume", None) == (
        "rollout resumed; v1 stays halted (canary pi-a failed v1: manifest signature does not verify): "
        "promote a fixed version to roll out again")


def test_pause_pin_unpin_and_rollback_through_the_command_queue(tmp_path):
    state, engine = fleet_state(tmp_path)
    policy = SimpleNamespace(registry=SimpleNamespace(versions=lambda: [1, 2]))
    handler = CommandHandler(state, policy, campaigns=None, log=structlog.get_logger(), rollout=engine)
    assert "paused" in handler.answer("rollout-pause", None)
    champion(state, 1)
    engine.tick()
    assert engine.record.current() is None  # paused: nothing goes out
    handler.answer("rollout-resume", None)
    engine.tick()
    assert engine.record.current().version == 1
    assert "pinned to v2" in handler.answer("pin", "pi-b 2")
    assert engine.desired("pi-b") == 2
    for bad, words in (("pi-x 2", "no registered agent 'pi-x'"), ("pi-b 9", "no registered model v9"),
                       ("pi-b two", "version must be a whole number")):
        try:
            handler.answer("pin", bad)
        except ValueError as exc:
            assert words in str(exc)
        else:
            raise AssertionError(f"pin {bad} was accepted")
    assert handler.answer("unpin", "pi-b") == "pi-b unpinned" and engine.desired("pi-b") is None
    engine.rollback(1)
    assert engine.record.current().stage is Stage.COMPLETE and engine.desired("pi-b") == 1
