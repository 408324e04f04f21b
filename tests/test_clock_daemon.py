"""A real fed-agent on a Pi whose clock is not synchronised yet: it holds the SuperNode back.

The Pi's systemd-timedated is a fake `timedatectl` on the agent's PATH printing what the real
one prints (`NTP=yes`, `NTPSynchronized=no`), read from a file the test rewrites. While it
waits, the STATUS= line says so, the watchdog keeps being pinged, the inbox files images and
heartbeats go out (with `clock.waiting`); the SuperNode starts once the clock syncs, or at
`clock.wait_for_sync_seconds` with a warning.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from agent_harness import AgentProcess, HeartbeatServer, NotifySocket, token_file, write_config
from conftest import free_port, needs_agent_venv, wait_for
from test_agent_inbox_daemon import jpeg

pytestmark = needs_agent_venv


class FakeTimedatectl:
    def __init__(self, folder: Path, synchronised: str = "no") -> None:
        self.bin_dir = folder / "bin"
        self.bin_dir.mkdir(parents=True)
        self.answer = folder / "ntp-synchronised"
        self.set(synchronised)
        script = self.bin_dir / "timedatectl"
        script.write_text('#!/bin/sh\n[ "$1" = show ] || exit 2\n'
                          f'echo NTP=yes\necho "NTPSynchronized=$(cat "{self.answer}")"\n')
        script.chmod(0o755)

    def set(self, synchronised: str) -> None:
        self.answer.write_text(synchronised + "\n")


@pytest.fixture
def unsynced_pi(tmp_path, monkeypatch):
    fake = FakeTimedatectl(tmp_path)
    monkeypatch.setenv("PATH", f"{fake.bin_dir}{os.pathsep}{os.environ['PATH']}")
    notify, beats = NotifySocket(tmp_path / "notify.sock"), HeartbeatServer()
    started = []

    def start(bound: float) -> AgentProcess:
        cfg = write_config(tmp_path / "agent.yaml", tmp_path / "state", f"127.0.0.1:{free_port()}", beats.url,
                           token_file(tmp_path), free_port(), clock__wait_for_sync_seconds=bound)
        started.append(AgentProcess(cfg, notify, tmp_path / "agent.log"))
        return started[-1]
    yield fake, notify, beats, start, tmp_path
    for agent in started:
        agent.stop()
    beats.close()
    notify.close()


def events(agent: AgentProcess, name: str) -> list[dict]:
    return [e for e in agent.events() if e.get("event") == name]


def test_waits_for_the_clock_and_stays_healthy_then_starts_when_synced(unsynced_pi):
    fake, notify, beats, start, tmp_path = unsynced_pi
    agent = start(bound=600)
    waiting = re.compile(r"STATUS=waiting for the clock to synchronise \(NTP\): [1-9][0-9]* s of at most 600 s; "
                         r"starting to 127\.0\.0\.1:[0-9]+; ")
    wait_for(lambda: [s for s in notify.lines("STATUS=") if waiting.match(s)], 20,
             what="a STATUS line counting the wait")
    (tmp_path / "state" / "inbox" / "head" / "a.jpg").write_bytes(jpeg((200, 30, 10)))  # filed while waiting
    beat = wait_for(lambda: [b["body"] for b in beats.received if b["body"]["images"]["labels"]], 20,
                    what="a heartbeat counting the filed image")[-1]
    assert beat["clock"]["waiting"] is True and beat["clock"]["synchronised"] == "no"
    assert beat["clock"]["source"] == "timedatectl" and beat["supernode"]["state"] == "starting"
    pinged_at = time.monotonic()
    wait_for(lambda: notify.lines("WATCHDOG=1", since=pinged_at + 1), 5, what="watchdog pings while waiting")
    assert not events(agent, "supernode_started")

    fake.set("yes")
    wait_for(lambda: events(agent, "supernode_started"), 20, what="the SuperNode started once synced")
    checked = events(agent, "clock_checked")
    assert checked and checked[0]["synchronised"] == "yes" and checked[0]["source"] == "timedatectl"
    synced_at = time.monotonic()
    beat = wait_for(lambda: [b["body"] for b in beats.received if b["time"] > synced_at], 20,
                    what="a heartbeat after the sync")[-1]
    assert beat["clock"]["waiting"] is False and beat["clock"]["synchronised"] == "yes"
    assert abs(beat["clock"]["offset_seconds"]) < 2  # the loopback endpoint's Date, same clock
    assert not events(agent, "clock_not_synchronised_starting_anyway")


def test_starts_anyway_at_the_bound_with_a_warning(unsynced_pi):
    fake, notify, beats, start, _ = unsynced_pi
    agent = start(bound=3)
    wait_for(lambda: events(agent, "supernode_started"), 20, what="the SuperNode started at the bound")
    warning = events(agent, "clock_not_synchronised_starting_anyway")
    assert warning and warning[0]["level"] == "warning" and warning[0]["bound_seconds"] == 3
    assert 3 <= warning[0]["waited_seconds"] < 6
    status = wait_for(lambda: [s for s in notify.lines("STATUS=") if "clock not synchronised" in s], 20,
                      what="the STATUS line naming the unsynchronised clock")
    assert status[-1].endswith("; clock not synchronised (NTP, timedatectl)"), status[-1]
