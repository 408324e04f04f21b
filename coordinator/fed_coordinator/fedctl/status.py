"""`fedctl status`: the one-screen summary (with the agents whose field numbers drift)."""

from __future__ import annotations

import json

from fed_coordinator.fedctl.common import open_state, printable
from fed_coordinator.fedctl.fleet import monitoring_settings


def cmd_status(args) -> int:
    st = open_state(args)
    from fed_coordinator.api.fleet import fleet_view

    fleet = fleet_view(st, 180, monitoring=monitoring_settings(args))
    running = st.running_campaign()
    last = next((c for c in st.campaigns(20) if c["status"] != "running"), None)
    data = {"agents_reporting": sum(agent.online for agent in fleet), "agents_registered": len(fleet),
            "agents_drifting": [agent.name for agent in fleet if agent.drifting],
            "running_campaign": running and running["id"], "champion": st.champion(),
            "last_campaign": last and {k: last[k] for k in ("id", "status", "reason")},
            "pending_deploys": len(st.deployments("pending"))}
    if args.json:
        print(json.dumps(data))
    else:
        for key, value in data.items():
            if isinstance(value, list):
                value = ", ".join(value) or None
            print(printable(f"{key.replace('_', ' ')}: {value if value is not None else '-'}"))
    return 0
