"""`fedctl deploys`: Edge Impulse deployments and their retries.

The `eim` column is the optional Linux runner kept next to the model (deploy/eim.py): its
file, size and SHA-256 when stored, else why not ("... not offered by the project", a failed
build). `--json` gives the whole record as `eim`.
"""

from __future__ import annotations

import json
import os

from fed_coordinator.fedctl.common import output, open_state, when


def eim_record(result: str | None) -> dict | None:
    """The `eim` record of a deployment's result (None: none recorded, e.g. before it was)."""
    try:
        doc = json.loads(result) if result else None
    except ValueError:
        return None
    record = doc.get("eim") if isinstance(doc, dict) else None
    return record if isinstance(record, dict) else None


def eim_text(record: dict | None) -> str | None:
    if record is None:
        return None
    if record.get("status") == "stored":
        size = float(record.get("bytes") or 0)
        size_text = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"
        return (f"{os.path.basename(str(record.get('path')))} {size_text} "
                f"sha256 {str(record.get('sha256'))[:12]}")
    return record.get("note") or record.get("status")


def cmd_deploys(args) -> int:
    rows = open_state(args).deployments()
    for r in rows:
        r["updated"] = when(r["updated_at"])
        r["next_attempt"] = when(r["next_attempt_at"]) if r["status"] == "pending" else None
        r["eim"] = eim_record(r.get("result"))
    shown = [dict(r, eim=eim_text(r["eim"])) for r in rows]
    return output(args, {"deployments": rows}, shown,
                  ["id", "model_version", "status", "attempts", "next_attempt", "updated", "eim",
                   "last_error"])
