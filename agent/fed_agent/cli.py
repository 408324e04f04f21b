"""`fed-agent`: run the daemon, check / print its configuration, `predict` images, `label`
a stored image, or serve the `review` page.

Exit status 78 (EX_CONFIG) on a bad configuration: the unit's RestartPreventExitStatus=78
keeps systemd from restarting a daemon that can only fail the same way again.
"""

from __future__ import annotations

import argparse
import os
import sys


def command_parser(command: str, description: str, json_help: str | None) -> argparse.ArgumentParser:
    """The parser of `fed-agent [-c FILE] COMMAND ... [--json]`, a command that is not the
    daemon (no --json when `json_help` is None)."""
    parser = argparse.ArgumentParser(prog=f"fed-agent {command}", description=description)
    parser.add_argument("-c", "--config", default=os.environ.get("FED_AGENT_CONFIG", "/etc/fed-agent/agent.yaml"))
    parser.add_argument("command", choices=[command])
    if json_help is not None:
        parser.add_argument("--json", action="store_true", help=json_help)
    return parser


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str]):
    """(arguments, the agent's config, None), or (arguments, None, 78) having said on stderr
    what is wrong with the config."""
    from fed_common.config import ConfigError

    from .config import load_config

    args = parser.parse_args(argv)
    try:
        return args, load_config(args.config), None
    except ConfigError as exc:
        print(f"fed-agent: {exc}", file=sys.stderr)
        return args, None, 78


def subcommand(args: list[str]) -> str | None:
    """The first word that is not an option or the config file's name (`-c FILE`)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-c", "--config"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    command = subcommand(args)
    if command == "predict":  # `fed-agent [-c FILE] predict IMAGE...`: not the daemon
        from .predict import predict_main

        return predict_main(args)
    if command == "label":  # `fed-agent [-c FILE] label IMAGE LABEL`
        from .label_command import label_main

        return label_main(args)
    if command == "review":  # `fed-agent [-c FILE] review [--host H] [--port P]`: the review page
        from .review_command import review_main

        return review_main(args)
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
