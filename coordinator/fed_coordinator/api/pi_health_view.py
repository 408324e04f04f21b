"""The Pis' health as the coordinator's readers show it: fleet problems, JSON, gauges, declines.

The words come from the agent's own model (fed_common.pi_health.PiHealth.problems), so the
fleet view, fedctl, the status page and the agent's `systemctl status` line say the same
thing: `UNDER-VOLTAGE now (throttled=0x50005)`, `84.0 °C >= training.max_temp_c 80.0`,
`declined training (c-1 round 2): ...`. A heartbeat from an agent older than Pi health has
no `pi_health` and shows nothing here.
"""

from __future__ import annotations

from typing import Any, Optional

from fed_common.heartbeat import Heartbeat
from fed_common.pi_health import CONDITIONS, readings_text
from prometheus_client import CollectorRegistry, Gauge


def pi_problems(beat: Optional[Heartbeat]) -> list[str]:
    if beat is None or beat.pi_health is None:
        return []
    return beat.pi_health.problems(beat.cpu_temperature_c)


def readings(beat: Optional[Heartbeat]) -> Optional[str]:
    """`51.2 °C, SD 12.3 GB free` for fedctl fleet's `health` column."""
    return readings_text(beat.cpu_temperature_c, beat.disk_free_bytes) if beat else None


def pi_health_json(beat: Optional[Heartbeat]) -> Optional[dict[str, Any]]:
    """The heartbeat's pi_health with the bits in words (`under-voltage now`, ...)."""
    if beat is None or beat.pi_health is None:
        return None
    health = beat.pi_health
    return {**health.model_dump(), "throttled_hex": f"{health.throttled:#x}" if health.throttled is not None else None,
            "now": health.now, "since_boot": health.since_boot, "words": health.words}


def declined_text(rounds: list[dict]) -> Optional[str]:
    """Who declined a campaign's train messages, with the rounds and the last reason:
    `pi-b declined round 1, 2: 84.0 °C >= training.max_temp_c 80.0` (None: nobody)."""
    by_agent: dict[str, tuple[list[int], str]] = {}
    for rnd in rounds:
        for declined in rnd.get("declines") or []:
            numbers, _ = by_agent.get(declined["agent"], ([], ""))
            by_agent[declined["agent"]] = (numbers + [int(rnd["round"])], declined["reason"])
    return "; ".join(f"{agent} declined round {', '.join(map(str, numbers))}: {reason}"
                     for agent, (numbers, reason) in by_agent.items()) or None


def pi_health_gauges(reg: CollectorRegistry, fleet: list) -> None:
    """Temperature and the firmware's bits per agent (only where the heartbeat has them)."""
    temperature = Gauge("fed_agent_cpu_temperature_celsius", "SoC temperature from the last heartbeat",
                        ["agent"], registry=reg)
    condition = Gauge("fed_agent_pi_condition", "1: the firmware reports the condition (under-voltage, "
                      "arm frequency capped, throttled, soft temperature limit) now / since boot",
                      ["agent", "condition", "when"], registry=reg)
    declined = Gauge("fed_agent_training_declined", "1: the agent declined its last train message", ["agent"],
                     registry=reg)
    for agent in fleet:
        beat = agent.heartbeat
        if beat is not None and beat.cpu_temperature_c is not None:
            temperature.labels(agent.name).set(beat.cpu_temperature_c)
        if beat is None or beat.pi_health is None:
            continue
        declined.labels(agent.name).set(int(beat.pi_health.last_decline is not None))
        if beat.pi_health.throttled is None:
            continue
        for name in CONDITIONS:
            condition.labels(agent.name, name, "now").set(int(name in beat.pi_health.now))
            condition.labels(agent.name, name, "since_boot").set(int(name in beat.pi_health.since_boot))
