"""`fed-coordinator`: run the service, or check / print its configuration (exit 78 on bad config)."""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_CONFIG = os.environ.get("FED_COORDINATOR_CONFIG", "/etc/fed-coordinator/coordinator.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fed-coordinator", description=__doc__)
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    parser.add_argument("command", nargs="?", default="run",
                        choices=["run", "validate-config", "print-default-config"])
    args = parser.parse_args(argv)
    from fed_common.config import config_command

    from .config import default_config_yaml, load_config

    cfg, status = config_command("fed-coordinator", args.config, args.command, load_config,
                                 default_config_yaml)
    if status is not None:
        return status
    import structlog
    from fed_common import logs

    from .service import Coordinator

    logs.configure(cfg.logging.level, stream=sys.stdout)
    structlog.contextvars.bind_contextvars(component="coordinator")
    return Coordinator(cfg, structlog.get_logger()).run()


if __name__ == "__main__":
    sys.exit(main())
