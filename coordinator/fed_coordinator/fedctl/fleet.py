"""`fedctl fleet`: the agents and their last heartbeats (typed rows from api.fleet)."""

from __future__ import annotations

from fed_coordinator.fedctl.common import output, open_state


def cmd_fleet(args) -> int:
    from fed_coordinator.api.fleet import fleet_view

    fleet = fleet_view(open_state(args), 180)
    rows = [{**agent.to_json(), "state": "online" if agent.online else "offline",
             "images": agent.image_total, "last_seen_s": agent.heartbeat_age_seconds,
             "model": agent.model} for agent in fleet]
    return output(args, {"agents": [agent.to_json() for agent in fleet]}, rows, ["name", "state", "last_seen_s", "supernode_state",
                                               "images", "model", "version", "address", "problem"])
