"""Strings from agents and campaigns cannot run on the status page or take over a terminal.

The status page is served by the real API app (uvicorn on loopback) from a state holding a
script payload in every string the page shows, and loaded in headless Chromium: nothing
runs (the title stays, no element comes from a payload), the text shows escaped, and the
Content-Security-Policy allows no script at all. fedctl's tables print control characters
from agent strings as codes, never raw.
"""

from __future__ import annotations

import html
import json
import shutil
import subprocess
import threading
import urllib.request

import pytest

from conftest import REPO, free_port, wait_for
from fed_common.logs import get_logger
from fed_coordinator.state import State
from test_api_heartbeat import GOOD

SCRIPT = "<script>document.title='pwned'</script>"
ATTRIBUTE = "\"><img src=x onerror=\"document.title='pwned'\">"
PAYLOAD = SCRIPT + ATTRIBUTE


def seeded_state(path) -> State:
    """One of everything the page shows, each string field carrying the payload."""
    state = State(path)
    state.migrate()
    name = "pi-1" + PAYLOAD  # not a valid agent name: a row from before validation, say
    state.add_agent(name)
    beat = {**GOOD, "agent": "pi-1",
            "last_training": {"campaign": PAYLOAD[:128], "run_id": 1, "round": 2, "time": 1.0, "examples": 5}}
    state.heartbeat(name, json.dumps(beat), "127.0.0.1")
    cid = "c1" + PAYLOAD
    state.campaign_started(cid, "run-now" + PAYLOAD, None)
    trained = {"agent": name, "num-examples": 5, "human-examples": 5, "pseudo-examples": 0}  # labels used
    state.round_recorded(cid, {"round": 1, "server_accuracy": 0.9, "server_loss": 0.3, "participants": [trained]})
    state.campaign_finished(cid, "failed" + PAYLOAD, "reason" + PAYLOAD, None)
    state.model_recorded(1, cid, 0.9, "rejected" + PAYLOAD, "model reason" + PAYLOAD)
    return state


@pytest.fixture
def page_server(tmp_path):
    import uvicorn

    from fed_coordinator.api.app import create_app

    app = create_app(seeded_state(tmp_path / "coordinator.db"), max_body=65536, online_after=1e9,
                     log=get_logger(component="test"), metrics_text=lambda: "")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, 0.1, "uvicorn to start")
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(10)


def test_page_answers_with_a_policy_that_allows_no_script(page_server):
    with urllib.request.urlopen(page_server, timeout=10) as resp:
        policy = resp.headers["Content-Security-Policy"]
        body = resp.read().decode()
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'" and "script-src" not in directives
    assert "unsafe-inline" not in policy and directives["style-src"].startswith("'sha256-")
    assert SCRIPT not in body and "<img" not in body
    assert html.escape(SCRIPT) in body and f'data-agent="{html.escape("pi-1" + PAYLOAD)}"' in body


@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (.ci/run installs it)")
def test_no_payload_runs_in_headless_chromium(page_server, tmp_path):
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
             "--disable-background-networking", "--disable-component-update",
             f"--user-data-dir={tmp_path / 'chromium'}"]
    dom = subprocess.run(["chromium", *flags, "--dump-dom", page_server], capture_output=True,
                         text=True, timeout=120).stdout
    assert "<title>fed-coordinator</title>" in dom, dom[:500]
    assert "pwned" not in dom.split("</title>")[0]
    assert "<img" not in dom and dom.count("<script") == 0
    as_text = SCRIPT.replace("<", "&lt;").replace(">", "&gt;")  # how Chromium serialises text
    for shown in ("reason", "model reason", "run-now", "c1", "pi-1"):
        assert f">{shown}{as_text}" in dom, shown


def test_fedctl_prints_control_characters_from_agents_as_codes(tmp_path):
    state = State(tmp_path / "coordinator.db")
    state.migrate()
    state.add_agent("pi-9\x1b]0;owned\x07\x1b[2J")
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "fedctl"), "--state-dir", str(tmp_path), "fleet"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "pi-9\\x1b]0;owned\\x07\\x1b[2J" in proc.stdout


def test_follow_lines_name_the_failed_agents_and_why():
    from fed_coordinator.fedctl.campaigns import _round_line

    line = _round_line({"round": 2, "server_accuracy": 0.9629, "participants": 2,
                        "failures": [{"agent": "evil\x1b[2J", "node_id": 7, "reason": "reply rejected: no metrics"}]})
    assert line == "round 2: server accuracy 0.963 (2 agents; failed: evil\\x1b[2J: reply rejected: no metrics)"
