"""The coordinator's SQLite state: versioned schema, honest after a crash, tokens hashed."""

import sqlite3

import pytest

from fed_coordinator.state import SCHEMA_VERSION, State, StateError


def test_fresh_database_is_at_the_current_schema(tmp_path):
    st = State(tmp_path / "c.db")
    assert st.schema_version() == SCHEMA_VERSION
    st.close()
    again = State(tmp_path / "c.db")  # reopening runs no migration twice
    assert again.schema_version() == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "c.db")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StateError, match="newer than this coordinator understands"):
        State(tmp_path / "c.db")


def test_recover_marks_running_campaign_interrupted_and_requeues_deploys(tmp_path):
    st = State(tmp_path / "c.db")
    st.campaign_started("c1", "schedule", None)
    st.round_recorded("c1", {"round": 1, "server_accuracy": 0.8, "participants": [{}, {}]})
    st.campaign_started("c0", "run-now", None)
    st.campaign_finished("c0", "completed", "", 1)
    dep = st.deployment_queued(1)
    st.deployment_update(dep, status="running", attempts=1)
    st.close()  # the process dies here
    st = State(tmp_path / "c.db")
    assert st.recover() == ["c1"]
    by_id = {c["id"]: c for c in st.campaigns()}
    assert by_id["c1"]["status"] == "interrupted"
    assert "stopped while the campaign ran" in by_id["c1"]["reason"]
    assert by_id["c1"]["rounds"][0]["server_accuracy"] == 0.8
    assert by_id["c0"]["status"] == "completed"
    assert st.deployments()[0]["status"] == "pending"


def test_tokens_are_stored_hashed(tmp_path):
    st = State(tmp_path / "c.db")
    token = st.add_agent("pi-1")
    assert st.agent_for_token(token) == "pi-1"
    assert st.agent_for_token(token + "x") is None
    raw = (tmp_path / "c.db").read_bytes() + (tmp_path / "c.db-wal").read_bytes()
    assert token.encode() not in raw


def test_round_failures_are_kept_and_a_version_1_database_is_migrated(tmp_path):
    from fed_coordinator.state import MIGRATIONS

    db = sqlite3.connect(tmp_path / "c.db")  # a database as the previous release left it
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO campaigns(id, trigger, status, started_at) VALUES('old', 'run-now', 'completed', 1)")
    db.execute("INSERT INTO rounds(campaign_id, round, participants) VALUES('old', 1, 2)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    st = State(tmp_path / "c.db")
    assert st.schema_version() == SCHEMA_VERSION
    st.campaign_started("new", "run-now", None)
    failure = {"agent": "evil-3", "node_id": 7, "reason": "reply rejected: array 'w0' has 1 non-finite value(s)"}
    st.round_recorded("new", {"round": 1, "server_accuracy": 0.9, "participants": [{}], "failures": [failure]})
    rounds = {c["id"]: c["rounds"] for c in st.campaigns()}
    assert rounds["old"][0]["failures"] == [] and rounds["new"][0]["failures"] == [failure]
    assert rounds["old"][0]["agents"] == []  # schema 5: per-agent label counts, none recorded then
