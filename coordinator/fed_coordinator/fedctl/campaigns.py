"""`fedctl campaigns [--follow]`: recent campaigns, or the rounds of the running one as they finish.

Each round says per agent what it trained on (`pi-1 24 human + 10 pseudo`; `pi-1 24 examples`
from a ClientApp that does not report its labels), the list the last round's.
"""

from __future__ import annotations

import json
import time

from fed_coordinator.api.fleet import labels_used
from fed_coordinator.api.pi_health_view import declined_text
from fed_coordinator.fedctl.common import open_state, output, printable, when


def cmd_campaigns(args) -> int:
    st = open_state(args)
    if args.follow:
        return _follow(st, args)
    rows = st.campaigns(args.limit)
    for r in rows:
        r["started"] = when(r["started_at"])
        r["rounds_done"] = len(r["rounds"])
        r["accuracy"] = r["rounds"][-1]["server_accuracy"] if r["rounds"] else None
        r["labels"] = labels_used(r["rounds"][-1].get("agents", [])) if r["rounds"] else None
        r["declined"] = declined_text(r["rounds"])
    return output(args, {"campaigns": rows}, rows, ["id", "trigger", "status", "started", "rounds_done",
                                                    "accuracy", "model_version", "labels", "declined", "reason"])


def _follow(st, args) -> int:
    """Print each round of the running (or next) campaign as it completes."""
    seen: set[tuple[str, int]] = set()
    cid = None
    while True:
        running = st.running_campaign()
        if cid is None and running:
            cid = running["id"]
            print(printable(f"following campaign {cid}"), flush=True)
        if cid:
            camp = next(c for c in st.campaigns(200) if c["id"] == cid)
            for r in camp["rounds"]:
                if (cid, r["round"]) not in seen:
                    seen.add((cid, r["round"]))
                    print(json.dumps(r) if args.json else _round_line(r), flush=True)
            if camp["status"] != "running":
                print(printable(f"campaign {cid} {camp['status']}" + (f": {camp['reason']}" if camp["reason"] else "")))
                return 0 if camp["status"] == "completed" else 1
        time.sleep(1)


def _round_line(r: dict) -> str:
    """`round 2: server accuracy 0.963 (2 agents: pi-1 24 human + 10 pseudo, pi-2 30 human + 0
    pseudo; failed: pi-3: reply rejected: ...; pi-4 declined: 84.0 °C >= training.max_temp_c 80.0)`."""
    failed = "; ".join(f"{f['agent']}: {f['reason']}" for f in r.get("failures") or [])
    declined = "; ".join(f"{d['agent']} declined: {d['reason']}" for d in r.get("declines") or [])
    used = labels_used(r.get("agents") or [])
    return printable(f"round {int(r['round'])}: server accuracy {r['server_accuracy']:.3f} "
                     f"({int(r['participants'])} agents" + (f": {used}" if used else "")
                     + (f"; failed: {failed}" if failed else "") + (f"; {declined}" if declined else "") + ")")
