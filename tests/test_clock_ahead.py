"""A Pi whose clock runs 62 s ahead: the agent says so, and the coordinator's fleet view says why.

The clock is Debian's libfaketime (LD_PRELOAD, FAKETIME="+62s") on a real fed-agent, so its
SuperNode and every child inherit the wrong wall clock, against a real fed-coordinator
(SuperLink, uvicorn fleet API) on the right one. FAKETIME_DONT_FAKE_MONOTONIC=1, because a
faked CLOCK_MONOTONIC makes Python's timed waits (threading.Event.wait, Lock.acquire(timeout))
hang, and because it is what a Pi with a wrong wall clock has: a right monotonic clock.

Where faketime cannot work: with libfaketime 0.9.10 (bookworm) and the monotonic clock left
alone, Python 3.11's time.sleep fails with EINVAL, so the SuperNode under it dies at start-up
(`sleep(0.1)` in flower_supernode.py) and the supervisor restarts it; Flower's refusal of a
node 62 s ahead is therefore shown on Flower's own interceptor with an injected timestamp
(test_clock.py::test_flowers_own_check_refuses_what_the_words_say), and here what the agent
reports and what the fleet view says. A second agent on the right clock shows the words come
from the offset, not from the setup. Without libfaketime the test is skipped, saying so
(.ci/run installs it).
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest

from conftest import needs_agent_venv, wait_for
from coordinator_harness import fedctl
from model_fleet import ModelFleet

LIBFAKETIME = next((p for p in (Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
                                Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"))
                    if p.exists()), None)
pytestmark = [needs_agent_venv, pytest.mark.skipif(
    LIBFAKETIME is None, reason="libfaketime is not installed (Debian: apt-get install faketime)")]
AHEAD = re.compile(r"^clock 6[123] s ahead: node authentication will fail$")


def fleet_rows(fleet: ModelFleet) -> dict:
    return {row["name"]: row for row in fleet.fedctl("fleet")["agents"]}


def reported_offset(fleet: ModelFleet, name: str):
    clock = fleet_rows(fleet)[name]["clock"]
    return clock and clock["offset_seconds"] is not None and clock


def test_clock_62_s_ahead_is_reported_with_the_reason(tmp_path, monkeypatch):
    fleet = ModelFleet(tmp_path, ["pi-right"], connect_superlink=True)
    try:
        with monkeypatch.context() as env:  # only this agent (and its SuperNode) runs ahead
            env.setenv("LD_PRELOAD", str(LIBFAKETIME))
            env.setenv("FAKETIME", "+62s")
            env.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            fleet.add_agent("pi-ahead")
        clock = wait_for(lambda: reported_offset(fleet, "pi-ahead"), 60, what="pi-ahead's measured offset")
        assert 60.5 <= clock["offset_seconds"] <= 63.5 and clock["offset_error_seconds"] < 2.5, clock
        assert AHEAD.match(clock["problem"]), clock
        row = fleet_rows(fleet)["pi-ahead"]
        assert [p for p in row["problems"] if AHEAD.match(p)], row["problems"]

        right = wait_for(lambda: reported_offset(fleet, "pi-right"), 60, what="pi-right's measured offset")
        assert abs(right["offset_seconds"]) < 1.5 and right["problem"] is None, right
        assert not [p for p in fleet_rows(fleet)["pi-right"]["problems"] if "ahead" in p or "behind" in p]

        table = fedctl(fleet.cfg, "fleet").stdout  # the same words in `fedctl fleet`'s problem column
        assert re.search(r"clock 6[123] s ahead: node authentication will fail", table), table
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{fleet.api_port}/metrics", timeout=10).read().decode()
        gauge = re.search(r'^fed_agent_clock_offset_seconds\{agent="pi-ahead"\} (\S+)$', metrics, re.M)
        assert gauge and 60.5 <= float(gauge.group(1)) <= 63.5, metrics[-2000:]

        status = wait_for(lambda: [s for s in fleet.sockets["pi-ahead"].lines("STATUS=") if "ahead" in s], 20,
                          what="pi-ahead's own STATUS line")
        assert re.match(r"STATUS=clock 6[123] s ahead: node authentication will fail; ", status[-1]), status[-1]
    finally:
        fleet.stop()
