"""`fedctl rollout`: where the champion's rollout to the Pis stands, agent by agent.

The rollout (stage, version, the version before, canaries, why it halted or completed, paused
or not) and, per agent, the version it should run next to the one its heartbeat says it
runs, with the model's state, a pin if it has one and, for a canary, what the canary stage
is waiting for. `pause`, `resume`, `fedctl pin` and `unpin` go through the service's command
queue (fedctl.queue) so the service logs them and decides.
"""

from __future__ import annotations

from fed_coordinator.fedctl.common import open_state, output, printable, when
from fed_coordinator.models.rollout import Stage


def cmd_rollout(args) -> int:
    from fed_coordinator.api.fleet import fleet_view
    from fed_coordinator.models.rollout import RolloutRecord
    from fed_coordinator.models.rollout_engine import canary_states

    state = open_state(args)
    record = RolloutRecord(state)
    rollout, paused, pins = record.current(), record.paused(), record.pins()
    fleet = fleet_view(state, 180)
    canaries = canary_states(fleet, rollout) if rollout else {}
    rows = []
    for agent in fleet:
        running = agent.heartbeat.running_model if agent.heartbeat else None
        desired = record.desired(agent.name)
        verdict = canaries.get(agent.name)
        rows.append({"name": agent.name, "online": agent.online,
                     "desired": desired, "running": running.version if running else None,
                     "model_state": running.state if running else None,
                     "reason": running.reason if running else None,
                     "self_test_accuracy": running.self_test_accuracy if running else None,
                     "pinned": pins.get(agent.name), "canary": verdict is not None,
                     "canary_state": f"{verdict[0]}: {verdict[1]}" if verdict else None,
                     "in_step": desired is None or (running is not None and running.version == desired
                                                    and running.state == "ok")})
    data = {"rollout": rollout.to_json() if rollout else None, "paused_since": paused, "pins": pins,
            "agents": rows}
    if args.json:
        return output(args, data, rows, [])
    print(_summary(rollout, paused))
    table_rows = [{**row, "desired": _version(row["desired"]), "running": _version(row["running"]),
                   "pinned": _version(row["pinned"]), "canary": "yes" if row["canary"] else ""} for row in rows]
    return output(args, data, table_rows, ["name", "desired", "running", "model_state", "canary", "pinned",
                                           "canary_state", "reason"])


def _summary(rollout, paused) -> str:
    if rollout is None:
        text = "rollout: none yet (no champion has been rolled out)"
    else:
        text = (f"rollout: v{rollout.version} {rollout.stage.value} (previous "
                f"{_version(rollout.previous) or 'none'}), started {when(rollout.started_at)}")
        if rollout.canaries:
            text += f"; canaries {', '.join(rollout.canaries)}"
        if rollout.canary_ok_since and rollout.stage is Stage.CANARY:
            text += f"; canaries ok since {when(rollout.canary_ok_since)}"
        if rollout.reason:
            text += f"; {rollout.reason}"
    lines = [printable(text)]  # the reason came from a Pi: no control characters to the terminal
    if paused:
        lines.append(f"PAUSED since {when(paused)} (fedctl rollout resume)")
    return "\n".join(lines)


def _version(version) -> str | None:
    return None if version is None else f"v{version}"
