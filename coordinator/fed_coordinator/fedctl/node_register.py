"""`fedctl node-register NAME KEY`: a Pi's SuperNode public key into the SuperLink."""

from __future__ import annotations

import json
import sys

from fed_coordinator.fedctl.common import state_dir


def cmd_node_register(args) -> int:
    """`flwr supernode register` against the local SuperLink; a key already there is fine."""
    import subprocess

    from fed_coordinator.flower import BIN_DIR, flower_env

    home = state_dir(args) / "flwr-cli"
    if not (home / "config.toml").is_file():
        raise SystemExit(f"fedctl: {home}/config.toml missing (start fed-coordinator first)")
    proc = subprocess.run([str(BIN_DIR / "flwr"), "supernode", "register", args.public_key, "fleet",
                           "--name", args.name, "--format", "json"], capture_output=True, text=True,
                          env=flower_env(home), timeout=60, cwd=home)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        data = {"success": False, "error-message": (proc.stdout + proc.stderr)[-500:]}
    message = str(data.get("error-message", ""))
    if data.get("success") or "already" in message.lower():
        print(f"node {args.name}: registered" + (" (already)" if not data.get("success") else ""))
        return 0
    print(f"fedctl: registering {args.name} failed: {message}", file=sys.stderr)
    return 1
