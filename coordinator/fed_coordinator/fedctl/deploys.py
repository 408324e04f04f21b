"""`fedctl deploys`: Edge Impulse deployments and their retries."""

from __future__ import annotations

from fed_coordinator.fedctl.common import output, open_state, when


def cmd_deploys(args) -> int:
    rows = open_state(args).deployments()
    for r in rows:
        r["updated"] = when(r["updated_at"])
        r["next_attempt"] = when(r["next_attempt_at"]) if r["status"] == "pending" else None
    return output(args, {"deployments": rows}, rows,
                ["id", "model_version", "status", "attempts", "next_attempt", "updated", "last_error"])
