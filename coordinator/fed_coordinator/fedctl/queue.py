"""`fedctl run-now | promote | deploy | rollback`: ask the running service, wait for its answer.

Why through the service: only fed-coordinator may start a campaign or change the champion
(service.commands answers); fedctl writes the request to the state's command queue.
"""

from __future__ import annotations

import json
import sys
import time

from fed_coordinator.fedctl.common import open_state


def ask_service(args, kind: str, arg: str | None = None) -> int:
    st = open_state(args)
    cmd_id = st.command_add(kind, arg)
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        cmd = st.command(cmd_id)
        if cmd["done_at"] is not None:
            print(json.dumps({"ok": bool(cmd["ok"]), "result": cmd["result"]}) if args.json else cmd["result"])
            return 0 if cmd["ok"] else 1
        time.sleep(0.3)
    print(f"fedctl: no answer from fed-coordinator within {args.wait:.0f}s (is it running?)",
          file=sys.stderr)
    return 1
