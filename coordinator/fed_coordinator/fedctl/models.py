"""`fedctl models`: the registered models, their gate status and the champion."""

from __future__ import annotations

from fed_coordinator.fedctl.common import output, open_registry, open_state


def cmd_models(args) -> int:
    st, reg = open_state(args), open_registry(args)
    status = {m["version"]: m for m in st.models()}
    rows = []
    for v in reversed(reg.versions()):
        meta = reg.metadata(v)
        m = status.get(v, {})
        rows.append({"version": v, "created": meta["created"], "campaign": meta.get("campaign_id"),
                     "server_accuracy": meta.get("server_accuracy"), "status": m.get("status", "-"),
                     "score": m.get("score"), "reason": m.get("reason"),
                     "champion": v == st.champion(), "path": str(reg.path(v))})
    return output(args, {"models": rows, "champion": st.champion()}, rows,
                ["version", "created", "status", "score", "campaign", "reason"])
