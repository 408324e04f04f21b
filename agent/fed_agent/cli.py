"""`fed-agent`: run the daemon, or check / print its configuration.

Exit status 78 (EX_CONFIG) on a bad configuration: the unit's RestartPreventExitStatus=78
keeps systemd from restarting a daemon that can only fail the same way again.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_CONFIG = os.environ.get("FED_AGENT_CONFIG", "/etc/fed-agent/agent.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fed-agent", description="Raspberry Pi fleet agent")
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                        help=f"config file (default {DEFAULT_CONFIG}, env FED_AGENT_CONFIG)")
    parser.add_argument("command", nargs="?", default="run",
                        choices=["run", "validate-config", "print-default-config"])
    args = parser.parse_args(argv)

    from fed_common.config import config_command
    from fed_common.logs import configure

    from .config import default_config_yaml, load_config

    cfg, status = config_command("fed-agent", args.config, args.command, load_config,
                                 default_config_yaml)
    if status is not None:
        return status

    configure(cfg.logging.level)
    import structlog

    from .daemon import Agent

    # Bound for every logger in the process (inbox, supervisor...): each line names the agent.
    structlog.contextvars.bind_contextvars(agent=cfg.agent.name)
    log = structlog.get_logger()
    try:
        return Agent(cfg, log).run()
    except OSError as exc:
        log.error("agent_failed", error=str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
