"""`fedctl agent-add NAME`: register an agent and issue its heartbeat token (0600 file)."""

from __future__ import annotations

from pathlib import Path

from fed_common.files import atomic_write

from fed_coordinator.fedctl.common import open_state, printable


def cmd_agent_add(args) -> int:
    st = open_state(args)
    known = {a["name"] for a in st.agents()}
    if args.if_missing and args.name in known:
        print(printable(f"agent {args.name}: already registered, token kept"))
        return 0
    token = st.add_agent(args.name)
    if args.token_file:
        path = Path(args.token_file)
        # A new 0600 file renamed over the name: a symlink planted there (fedctl runs as
        # root under Ansible) is replaced, never followed, and no reader sees half a token.
        atomic_write(path, token + "\n", mode=0o600)
        print(printable(f"agent {args.name}: token written to {path} (mode 0600)"))
    else:
        print(token)
    return 0
