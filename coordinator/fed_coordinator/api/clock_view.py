"""The agents' clocks as the coordinator's readers show them: fleet problems, JSON, gauges.

The words come from fed_common.clock (`clock 62 s ahead: node authentication will fail`,
Flower's own limits), so the fleet view, fedctl, the status page, the coordinator's STATUS
line and the agent's `systemctl status` say the same thing. The offset is the agent's clock
minus the coordinator's as the agent measured it from the previous heartbeat reply's `Date`
header (whole seconds: about +-0.5 s plus half the round trip). A heartbeat from an agent
older than this has no `clock` and shows nothing here.
"""

from __future__ import annotations

from typing import Any, Optional

from fed_common.clock import clock_problems, offset_problem
from fed_common.heartbeat import Heartbeat
from prometheus_client import CollectorRegistry, Gauge


def agent_clock_problems(beat: Optional[Heartbeat]) -> list[str]:
    return clock_problems(beat.clock if beat else None)


def clock_json(beat: Optional[Heartbeat]) -> Optional[dict[str, Any]]:
    """The heartbeat's clock, with Flower's verdict on its offset in words (None: fine or unknown)."""
    if beat is None or beat.clock is None:
        return None
    return {**beat.clock.model_dump(), "problem": offset_problem(beat.clock.offset_seconds)}


def clock_status_text(fleet: list, shown: int = 3) -> str:
    """For the coordinator's STATUS line: `; clock: pi-1 clock 62 s ahead: node authentication
    will fail` (the first `shown` agents whose offset Flower refuses; empty: none)."""
    refused = [(agent.name, problem) for agent in fleet
               if agent.heartbeat is not None and agent.heartbeat.clock is not None
               and (problem := offset_problem(agent.heartbeat.clock.offset_seconds))]
    if not refused:
        return ""
    more = f" (+{len(refused) - shown} more)" if len(refused) > shown else ""
    return "; " + ", ".join(f"{name} {problem}" for name, problem in refused[:shown]) + more


def clock_gauges(reg: CollectorRegistry, fleet: list) -> None:
    """The offset and the sync state per agent (only where the heartbeat has them)."""
    offset = Gauge("fed_agent_clock_offset_seconds", "Agent clock minus coordinator clock (positive: ahead), "
                   "from the Date header of a heartbeat reply; Flower refuses >= 5 ahead or >= 305 behind",
                   ["agent"], registry=reg)
    synced = Gauge("fed_agent_clock_synchronised", "1: the agent's clock is NTP-synchronised, 0: not "
                   "(absent: unknown)", ["agent"], registry=reg)
    for agent in fleet:
        clock = agent.heartbeat.clock if agent.heartbeat else None
        if clock is None:
            continue
        if clock.offset_seconds is not None:
            offset.labels(agent.name).set(clock.offset_seconds)
        if clock.synchronised != "unknown":
            synced.labels(agent.name).set(int(clock.synchronised == "yes"))
