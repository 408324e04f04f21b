"""`fedctl fleet`: the agents and their last heartbeats (typed rows from api.fleet).

The `images` column counts the stored images by who labeled them (`120 human, 30 pseudo, 12
review, 4 unlabeled`; `--json`: each agent's `image_status`, and `images` per label). The
`field` column is the field view (api.field_history: the running version's totals over
`monitoring.field_window_hours`), and a drifting agent says `DRIFT ...` in the problem column;
`--json` has the numbers under each agent's `field`.
"""

from __future__ import annotations

from pathlib import Path

from fed_coordinator.fedctl.common import output, open_state


def monitoring_settings(args):
    """The config's `monitoring:` section when the config file exists, else the defaults
    (fedctl --state-dir works on a state folder with no config next to it)."""
    from fed_coordinator.config import ConfigError, MonitoringSection, load_config

    if not Path(args.config).exists():
        return MonitoringSection()
    try:
        return load_config(args.config).monitoring
    except ConfigError as exc:
        raise SystemExit(f"fedctl: {exc}")


def cmd_fleet(args) -> int:
    from fed_coordinator.api.fleet import fleet_view
    from fed_coordinator.api.pi_health_view import readings

    fleet = fleet_view(open_state(args), 180, monitoring=monitoring_settings(args))
    rows = [{**agent.to_json(), "state": "online" if agent.online else "offline",
             "images": agent.images_text, "last_seen_s": agent.heartbeat_age_seconds,
             "model": agent.model_detail, "field": agent.field_view.text() if agent.field_view else None,
             "health": readings(agent.heartbeat), "problem": "; ".join(agent.problems) or None} for agent in fleet]
    columns = ["name", "state", "last_seen_s", "supernode_state", "images", "model", "field", "health", "version",
               "address", "problem"]
    return output(args, {"agents": [agent.to_json() for agent in fleet]}, rows, columns)
