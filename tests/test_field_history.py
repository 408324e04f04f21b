"""The field history (state schema 4) and the drift flag, on a real SQLite state with scripted times.

Each summary is stored the way the heartbeat route stores it (`State.heartbeat(..., also=
record_statements(...))`) with an explicit receive time, so windows, baselines and pruning are
exact here; tests/test_field_monitoring.py goes through the real service.
"""

from __future__ import annotations

import html
import json
import sqlite3
import time

import pytest

from fed_common.heartbeat import FieldSummary, Heartbeat, RunningModel, SupernodeStatus
from fed_coordinator.api.field_history import field_view, hourly_low_confidence, record_statements
from fed_coordinator.api.fleet import fleet_view
from fed_coordinator.api.metrics import metrics_text
from fed_coordinator.api.status_page import status_page_html
from fed_coordinator.config import MonitoringSection
from fed_coordinator.state import MIGRATIONS, SCHEMA_VERSION, State

HOUR, DAY = 3600.0, 86400.0
NOW = 1_750_000_000.0
DEFAULTS = MonitoringSection()


def summary(images: int, low: int, version: int | None = 3, labeled: int = 0, correct: int = 0,
            mean: float | None = 0.8) -> FieldSummary:
    hardhat = images // 2
    return FieldSummary(model_version=version, images=images, predicted={"hardhat": hardhat, "head": images - hardhat},
                        mean_confidence=mean if images else None, low_confidence_images=low, labeled=labeled,
                        correct=correct)


def store(state: State, agent: str, field: FieldSummary | None, at: float, settings=DEFAULTS,
          running: int | None = 3) -> None:
    # the body's name is a valid one; the state's row may be older than name validation
    beat = Heartbeat(agent="pi-1", version="t", uptime_seconds=1.0, supernode=SupernodeStatus(state="connected"),
                     running_model=RunningModel(version=running, state="ok") if running else None, field=field)
    state.heartbeat(agent, beat.model_dump_json(), "10.0.0.1", also=record_statements(agent, field, at, settings))


def rows(state: State, agent: str = "pi-1") -> list[dict]:
    return state.query("SELECT * FROM field_summaries WHERE agent=? ORDER BY received_at", (agent,))


@pytest.fixture
def state(tmp_path) -> State:
    st = State(tmp_path / "coordinator.db")
    st.add_agent("pi-1")
    return st


def history(state: State, shares: list[tuple[int, int, int]], start: float, step: float = HOUR,
            agent: str = "pi-1") -> float:
    """(version, images, low) per summary, one every `step` from `start`; returns the last time."""
    at = start
    for version, images, low in shares:
        store(state, agent, summary(images, low, version), at, running=version)
        at += step
    return at - step


def drift(state: State, running: int | None = 3, settings=DEFAULTS):
    return field_view(state, "pi-1", running, NOW, settings).drift


def test_a_schema_3_database_is_migrated_and_keeps_its_agents(tmp_path):
    db = sqlite3.connect(tmp_path / "c.db")  # as the previous release left it
    for script in MIGRATIONS[:3]:
        db.executescript(script)
    db.execute("INSERT INTO agents(name, token_sha256, created_at, last_payload) VALUES('pi-1', 'x', 1, '{}')")
    db.execute("INSERT INTO pins(agent, version, created_at) VALUES('pi-1', 2, 1)")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    st = State(tmp_path / "c.db")
    assert st.schema_version() == SCHEMA_VERSION >= 4
    assert st.agents()[0]["name"] == "pi-1" and st.query("SELECT version FROM pins") == [{"version": 2}]
    store(st, "pi-1", summary(10, 2, labeled=10, correct=9, mean=0.75), NOW)
    (row,) = rows(st)
    assert (row["model_version"], row["images"], row["low_confidence_images"], row["labeled"], row["correct"]) == \
        (3, 10, 2, 10, 9)
    assert row["confidence_sum"] == pytest.approx(7.5) and json.loads(row["predicted"]) == {"hardhat": 5, "head": 5}
    assert {r["name"] for r in st.query("SELECT name FROM sqlite_master WHERE type='index'")} >= \
        {"field_summaries_agent", "field_summaries_received"}


def test_only_summaries_that_counted_images_are_kept(state):
    store(state, "pi-1", None, NOW - 2)
    store(state, "pi-1", summary(0, 0), NOW - 1)
    assert rows(state) == []
    assert field_view(state, "pi-1", 3, NOW, DEFAULTS) is None  # never a field image: no view at all
    store(state, "pi-1", summary(4, 1), NOW)
    assert [r["images"] for r in rows(state)] == [4]


def test_the_row_commits_with_the_heartbeat_or_not_at_all(state):
    store(state, "pi-1", summary(4, 1), NOW)
    before = state.agents()[0]["last_payload"]
    beat = Heartbeat(agent="pi-1", version="other", uptime_seconds=2.0, supernode=SupernodeStatus(state="connected"))
    failing = record_statements("pi-1", summary(6, 1), NOW + 1, DEFAULTS) + [("INSERT INTO no_such_table VALUES(1)", ())]
    with pytest.raises(sqlite3.OperationalError):
        state.heartbeat("pi-1", beat.model_dump_json(), "10.0.0.1", also=failing)
    assert state.agents()[0]["last_payload"] == before and [r["images"] for r in rows(state)] == [4]


def test_history_is_bounded_by_age_and_by_rows_per_agent(state):
    settings = MonitoringSection(history_days=10, baseline_days=7, history_max_rows_per_agent=100)
    state.add_agent("pi-2")
    store(state, "pi-2", summary(5, 0), NOW - 11 * DAY, settings)  # an agent gone quiet
    for i in range(150):
        store(state, "pi-1", summary(2, 0), NOW - 150 + i, settings)
    kept = rows(state)
    assert len(kept) == 100 and kept[0]["received_at"] == NOW - 100  # the newest 100
    assert rows(state, "pi-2") == []  # older than history_days, deleted by anyone's write


def test_the_field_view_totals_the_running_version_over_the_window(state):
    store(state, "pi-1", summary(10, 10, version=2), NOW - 3 * HOUR, running=2)  # before the switch to v3
    store(state, "pi-1", summary(8, 8, labeled=8, correct=0), NOW - 25 * HOUR)  # outside the 24 h
    store(state, "pi-1", summary(10, 1, labeled=10, correct=9, mean=0.9), NOW - 2 * HOUR)
    store(state, "pi-1", summary(30, 3, labeled=10, correct=10, mean=0.7), NOW - HOUR)
    view = fleet_view(state, 180, NOW)[0].field_view
    totals = view.totals
    assert (totals.model_version, totals.images, totals.low_confidence_images) == (3, 40, 4)
    assert totals.low_confidence_share == pytest.approx(0.1) and totals.field_accuracy == pytest.approx(19 / 20)
    assert totals.mean_confidence == pytest.approx((0.9 * 10 + 0.7 * 30) / 40)  # weighted by images
    assert totals.predicted == {"hardhat": 20, "head": 20} and view.text() == "40 img, 10% low, acc 0.95"
    assert field_view(state, "pi-1", None, NOW, DEFAULTS).totals.model_version == 3  # no running_model: newest's
    assert fleet_view(state, 180, NOW, MonitoringSection(field_window_hours=48))[0].field_view.totals.images == 48


def test_a_rise_well_above_the_agents_own_baseline_is_drift(state):
    last = history(state, [(3, 10, 1)] * 10 + [(3, 12, 6), (3, 12, 6)], NOW - 12 * HOUR)
    check = drift(state)
    assert check.drifting and check.compared and last < NOW
    assert (check.recent.images, check.recent.share, check.baseline.images) == (24, 0.5, 100)
    assert check.reason == "low-confidence share 0.50 in the latest 24 images, baseline 0.10 in 100 before (v3)"
    assert fleet_view(state, 180, NOW)[0].problems == [f"DRIFT {check.reason}"]


def test_too_few_images_is_not_drift(state):
    history(state, [(3, 12, 12)], NOW - HOUR)
    check = drift(state)
    assert not check.drifting and check.reason == "too few images: 12 of 20 (v3)"
    history(state, [(3, 10, 10)], NOW - HOUR / 2)  # 22 recent, nothing before them
    check = drift(state)
    assert not check.drifting and check.reason == "no baseline yet: 0 of 20 images before the latest 22 (v3)"
    assert fleet_view(state, 180, NOW)[0].problems == []


def test_a_model_change_is_not_drift(state):
    """v2 was sure of its photos; v3 is less sure from its first photo on: not a change of scene."""
    history(state, [(2, 20, 1)] * 10, NOW - 20 * HOUR)
    history(state, [(3, 10, 6)] * 3, NOW - 3 * HOUR)
    check = drift(state)
    assert not check.drifting and not check.compared
    assert check.reason == "no baseline yet: 10 of 20 images before the latest 20 (v3)"
    assert drift(state, running=2).reason.startswith("steady: low-confidence share 0.05")  # v2 alone: steady


def test_a_rise_must_pass_both_the_difference_and_the_factor(state):
    history(state, [(3, 20, 6)] * 3 + [(3, 20, 9)], NOW - 10 * HOUR)  # 0.30 -> 0.45: +0.15 only
    assert not drift(state).drifting and drift(state).reason.startswith("steady: low-confidence share 0.45")
    history(state, [(3, 20, 11)], NOW - HOUR)  # 0.55 against 0.34 before it: +0.21, but under 2x
    check = drift(state)
    assert check.recent.share == 0.55 and not check.drifting
    assert drift(state, settings=MonitoringSection(drift_factor=1.5)).drifting  # the settings decide


def test_the_baseline_is_only_the_baseline_days_before_the_recent_window(state):
    history(state, [(3, 50, 5)], NOW - 9 * DAY)  # v3 was steady, but long ago
    history(state, [(3, 25, 15)], NOW - HOUR)
    assert drift(state).reason == "no baseline yet: 0 of 20 images before the latest 25 (v3)"
    assert drift(state, settings=MonitoringSection(baseline_days=10)).drifting


def test_the_chart_has_the_share_per_hour(state):
    history(state, [(3, 10, 1), (3, 10, 3)], NOW - 5 * HOUR, step=60)  # one hour, two summaries
    history(state, [(2, 10, 10)], NOW - HOUR)  # every version is on the chart
    history(state, [(3, 10, 10)], NOW - 4 * DAY)  # older than chart_days
    points = hourly_low_confidence(state, "pi-1", NOW, DEFAULTS.chart_days)
    assert [(p.hour, p.images, p.share) for p in points] == [
        (int((NOW - 5 * HOUR) // HOUR), 20, 0.2), (int((NOW - HOUR) // HOUR), 10, 1.0)]


def test_metrics_escape_agent_names_in_labels(state):
    odd = 'pi"1\\x\nnext'  # a row from before names were validated
    state.add_agent(odd)
    history(state, [(3, 10, 1)] * 10 + [(3, 12, 6), (3, 12, 6)], NOW - 12 * HOUR, agent=odd)
    text = metrics_text(state, 180)
    assert 'fed_agent_drifting{agent="pi\\"1\\\\x\\nnext"} 1.0' in text
    assert 'fed_agent_drifting{agent="pi-1"} 0.0' in text


def test_the_field_cells_on_the_status_page_are_escaped(state):
    from test_status_page_security import PAYLOAD

    name = "pi-1" + PAYLOAD  # a row from before names were validated
    state.add_agent(name)
    history(state, [(3, 10, 1)] * 10 + [(3, 12, 6), (3, 12, 6)], time.time() - 12 * HOUR, agent=name)
    page = status_page_html(state, 180, DEFAULTS)
    assert "<script" not in page and "<img" not in page and " style=" not in page
    assert f'<svg class="field-chart" data-agent="{html.escape(name)}" data-hours="12"' in page
    assert '<td class="drift">DRIFT low-confidence share 0.50' in page
