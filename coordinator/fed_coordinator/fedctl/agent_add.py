"""`fedctl agent-add NAME`: register an agent and issue its heartbeat token (0600 file)."""

from __future__ import annotations

import os
from pathlib import Path

from fed_coordinator.fedctl.common import open_state


def cmd_agent_add(args) -> int:
    st = open_state(args)
    known = {a["name"] for a in st.agents()}
    if args.if_missing and args.name in known and args.token_file and Path(args.token_file).is_file():
        print(f"agent {args.name}: already registered, token file kept")
        return 0
    token = st.add_agent(args.name)
    if args.token_file:
        path = Path(args.token_file)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        os.chmod(path, 0o600)
        print(f"agent {args.name}: token written to {path} (mode 0600)")
    else:
        print(token)
    return 0
