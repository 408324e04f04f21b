"""`fed-agent`: run the daemon, check / print its configuration, or `predict` images.

Exit status 78 (EX_CONFIG) on a bad configuration: the unit's RestartPreventExitStatus=78
keeps systemd from restarting a daemon that can only fail the same way again.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if "predict" in args:  # `fed-agent [-c FILE] predict IMAGE...`: not the daemon
        from .predict import predict_main

        return predict_main(args)
    from fed_common.config import daemon_command_line
    from fed_common.logs import configure

    from .config import default_config_yaml, load_config

    cfg, status = daemon_command_line("fed-agent", "Raspberry Pi fleet agent", "FED_AGENT_CONFIG",
                                      "/etc/fed-agent/agent.yaml", load_config, default_config_yaml, argv)
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
