"""Nothing a client sends to the heartbeat API can crash fed-coordinator or get stored.

A real fed-coordinator process (its own SuperLink child, its real API); each malformed
heartbeat is sent with a valid agent token, answered 4xx naming the field, and leaves
nothing in the state. A payload already in the database from before the schema (the
"supernode": "oops" that used to make fleet_view raise at every start) is survived across
a restart.
"""

import json
import sqlite3
import urllib.error
import urllib.request

import pytest

from conftest import WEIGHTS, free_port
from coordinator_harness import CoordinatorProcess, fedctl, write_coordinator_config
from fed_common.heartbeat import Heartbeat

GOOD = {"schema_version": 1, "agent": "pi-1", "version": "0.1.0", "uptime_seconds": 12.5,
        "supernode": {"state": "connected", "node_id": "123", "restarts": 0},
        "images": {"labels": {"head": {"train": 3, "test": 1}, "hardhat": {"train": 2, "test": 0}},
                   "quarantined": 1, "pending": 0},
        "load": [0.1, 0.2, 0.3], "cpu_temperature_c": 48.5}


def _with(**changes) -> str:
    return json.dumps({**GOOD, **changes})


def _deep(depth: int) -> str:
    return _with(images="@").replace('"@"', "[" * depth + "]" * depth)


BAD = [  # (what, body, status, text the answer must contain)
    ("string where an object goes", _with(supernode="oops"), 422,
     "At 'supernode': must be a mapping of keys (got 'oops')"),
    ("NaN", _with(uptime_seconds="@").replace('"@"', "NaN"), 422, "At 'uptime_seconds': must be a finite number"),
    ("Infinity", _with(load="@").replace('"@"', "[Infinity]"), 422, "At 'load[0]': must be a finite number"),
    ("1e999", _with(cpu_temperature_c="@").replace('"@"', "1e999"), 422, "At 'cpu_temperature_c'"),
    ("list where a map goes", _with(images={"labels": [1, 2]}), 422, "At 'images.labels': must be a mapping"),
    ("20,000-deep nesting", _deep(20_000), 400, "recursion limit exceeded"),
    ("oversized string", _with(version="v" * 5000), 422, "At 'version': String should have at most 64"),
    ("oversized label map", _with(images={"labels": {f"l{i}": {} for i in range(100)}}), 422, "At 'images.labels'"),
    ("unknown schema version", _with(schema_version=2), 422, "At 'schema_version': must be one of 1 (got 2)"),
    ("unknown key", _with(extra_field=1), 422, "At 'extra_field': unknown key"),
    ("number as a string", _with(uptime_seconds="12"), 422, "At 'uptime_seconds'"),
    ("negative count", _with(images={"quarantined": -1}), 422, "At 'images.quarantined': must be at least 0"),
    ("not JSON", "{not json", 400, "body is not valid JSON"),
    ("a list", "[1, 2]", 422, "At '(top level)': must be a mapping of keys"),
]


def post(url: str, body: bytes, token: str | None):
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def get(url: str):
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode()


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    api_port = free_port()
    cfg = write_coordinator_config(root / "coordinator.yaml", root / "state", root, WEIGHTS,
                                   free_port(), api_port)
    coord = CoordinatorProcess(cfg, root / "coordinator.log")
    coord.wait_ready()
    tokens = {}
    for name in ("pi-1", "pi-2"):
        out = fedctl(cfg, "agent-add", name, "--token-file", str(root / f"{name}.token"))
        assert out.returncode == 0, out.stderr
        tokens[name] = (root / f"{name}.token").read_text().strip()
    state = {"root": root, "cfg": cfg, "coord": coord, "tokens": tokens, "api": f"http://127.0.0.1:{api_port}"}
    yield state
    state["coord"].stop()


def _stored(service, name: str):
    with sqlite3.connect(service["root"] / "state" / "coordinator.db") as db:
        return db.execute("SELECT last_heartbeat, last_payload FROM agents WHERE name=?", (name,)).fetchone()


@pytest.mark.parametrize("what, body, status, text", BAD, ids=[case[0] for case in BAD])
def test_bad_heartbeat_is_refused_naming_the_field_and_nothing_is_stored(service, what, body, status, text):
    answer_status, answer = post(service["api"] + "/api/v1/heartbeat", body.encode(), service["tokens"]["pi-2"])
    assert answer_status == status, answer
    assert text in json.dumps(answer), answer
    assert _stored(service, "pi-2") == (None, None)
    assert service["coord"].proc.poll() is None
    assert get(service["api"] + "/api/v1/fleet")[0] == 200


def test_auth_and_size_checks_come_first(service):
    url = service["api"] + "/api/v1/heartbeat"
    good = json.dumps(GOOD).encode()
    assert post(url, good, None) == (401, {"error": "missing bearer token"})
    assert post(url, good, "wrong")[0] == 401
    status, body = post(url, good, service["tokens"]["pi-2"])
    assert status == 403 and "pi-2" in body["error"]
    assert post(url, _with(pad="x" * 70_000).encode(), service["tokens"]["pi-1"])[0] == 413


def test_unknown_tokens_are_logged_once_a_minute_per_client(service):
    url = service["api"] + "/api/v1/heartbeat"
    before = len([e for e in service["coord"].events() if e.get("reason") == "unknown token"])
    for _ in range(50):
        assert post(url, b"{}", "not-a-token")[0] == 401
    lines = [e for e in service["coord"].events() if e.get("reason") == "unknown token"]
    assert lines and len(lines) - before <= 1, lines[-3:]  # said, but not 50 times


def test_good_heartbeat_is_stored_and_read_back_typed(service):
    status, body = post(service["api"] + "/api/v1/heartbeat", json.dumps(GOOD).encode(), service["tokens"]["pi-1"])
    assert (status, body) == (200, {"ok": True, "agent": "pi-1", "desired_model": None})
    stored = Heartbeat.model_validate_json(_stored(service, "pi-1")[1])
    assert stored == Heartbeat.model_validate(GOOD)
    fleet = {row["name"]: row for row in json.loads(get(service["api"] + "/api/v1/fleet")[1])["agents"]}
    assert fleet["pi-1"]["online"] and fleet["pi-1"]["images"]["quarantined"] == 1
    assert fleet["pi-1"]["supernode_state"] == "connected" and fleet["pi-2"]["supernode_state"] is None
    out = fedctl(service["cfg"], "fleet")
    assert out.returncode == 0 and "pi-1" in out.stdout and "online" in out.stdout


def test_a_pre_schema_payload_in_the_database_survives_a_restart(service):
    """The crash loop of the old coordinator: a wrong-typed payload already stored."""
    with sqlite3.connect(service["root"] / "state" / "coordinator.db") as db:
        db.execute("UPDATE agents SET last_heartbeat=strftime('%s','now'), last_payload=? WHERE name='pi-2'",
                   (json.dumps({"agent": "pi-2", "supernode": "oops", "images": [1]}),))
    service["coord"].stop()
    service["coord"] = CoordinatorProcess(service["cfg"], service["root"] / "coordinator.log")
    service["coord"].wait_ready()
    for path in ("/api/v1/fleet", "/", "/metrics"):
        assert get(service["api"] + path)[0] == 200, path
    fleet = {row["name"]: row for row in json.loads(get(service["api"] + "/api/v1/fleet")[1])["agents"]}
    assert fleet["pi-2"]["online"] and fleet["pi-2"]["version"] is None
    out = fedctl(service["cfg"], "fleet")
    assert out.returncode == 0 and "pi-2" in out.stdout
    assert json.loads(fedctl(service["cfg"], "--json", "status").stdout)["agents_registered"] == 2
    assert service["coord"].proc.poll() is None
