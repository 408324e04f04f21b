"""`fedctl`: the operator's command line. Readable tables by default, `--json` for scripts.

It reads the coordinator's state (SQLite) directly and hands actions (run-now, promote,
rollback, deploy) to the running service through a command queue in the same database,
then waits for the service's answer. Run it on the coordinator host as root or the
service user.
"""

from __future__ import annotations

import argparse
import os
import sys

from fed_coordinator.fedctl.agent_add import cmd_agent_add
from fed_coordinator.fedctl.campaigns import cmd_campaigns
from fed_coordinator.fedctl.deploys import cmd_deploys
from fed_coordinator.fedctl.fleet import cmd_fleet
from fed_coordinator.fedctl.models import cmd_models
from fed_coordinator.fedctl.node_register import cmd_node_register
from fed_coordinator.fedctl.predict import cmd_predict
from fed_coordinator.fedctl.queue import ask_service
from fed_coordinator.fedctl.rollout import cmd_rollout
from fed_coordinator.fedctl.status import cmd_status

DEFAULT_CONFIG = os.environ.get("FED_COORDINATOR_CONFIG", "/etc/fed-coordinator/coordinator.yaml")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fedctl", description=__doc__.splitlines()[0])
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="coordinator config (for its state_dir)")
    p.add_argument("--state-dir", default=os.environ.get("FED_STATE_DIR"), help="overrides the config")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the service's answer")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="one-screen summary").set_defaults(func=cmd_status)
    sub.add_parser("fleet", help="agents and their heartbeats").set_defaults(func=cmd_fleet)
    c = sub.add_parser("campaigns", help="recent campaigns")
    c.add_argument("--follow", action="store_true", help="print rounds of the running campaign as they finish")
    c.add_argument("--limit", type=int, default=20)
    c.set_defaults(func=cmd_campaigns)
    sub.add_parser("models", help="registered models").set_defaults(func=cmd_models)
    sub.add_parser("deploys", help="Edge Impulse deployments").set_defaults(func=cmd_deploys)
    sub.add_parser("run-now", help="start a campaign now").set_defaults(func=lambda a: ask_service(a, "run-now"))
    for name, text in (("promote", "make VERSION the champion and deploy it"),
                       ("deploy", "deploy VERSION again")):
        s = sub.add_parser(name, help=text)
        s.add_argument("version", type=int)
        s.set_defaults(func=lambda a, n=name: ask_service(a, n, str(a.version)))
    sub.add_parser("rollback", help="previous champion back (on every Pi at once)").set_defaults(func=lambda a: ask_service(a, "rollback"))
    s = sub.add_parser("rollout", help="the champion's rollout to the Pis: desired vs running per agent")
    s.add_argument("action", nargs="?", choices=["pause", "resume"], help="freeze or release the rollout")
    s.set_defaults(func=lambda a: ask_service(a, f"rollout-{a.action}") if a.action else cmd_rollout(a))
    s = sub.add_parser("pin", help="make AGENT run VERSION whatever the rollout says")
    s.add_argument("agent")
    s.add_argument("version", type=int)
    s.set_defaults(func=lambda a: ask_service(a, "pin", f"{a.agent} {a.version}"))
    s = sub.add_parser("unpin", help="AGENT follows the rollout again")
    s.add_argument("agent")
    s.set_defaults(func=lambda a: ask_service(a, "unpin", a.agent))
    s = sub.add_parser("agent-add", help="register an agent and issue its heartbeat token")
    s.add_argument("name")
    s.add_argument("--token-file", help="write the token here (mode 0600) instead of printing it")
    s.set_defaults(func=cmd_agent_add)
    s.add_argument("--if-missing", action="store_true",
                   help="do nothing when the agent is already registered (its token is kept; idempotent)")
    s = sub.add_parser("node-register", help="register a Pi's SuperNode public key (node authentication)")
    s.add_argument("name")
    s.add_argument("public_key")
    s.set_defaults(func=cmd_node_register)
    s = sub.add_parser("predict", help="classify images with the newest registered model")
    s.add_argument("images", nargs="+")
    s.set_defaults(func=cmd_predict)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
