"""`fed-coordinator`: run the service, or check / print its configuration (exit 78 on bad config)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from fed_common.config import daemon_command_line

    from fed_coordinator.config import default_config_yaml, load_config

    cfg, status = daemon_command_line("fed-coordinator", __doc__, "FED_COORDINATOR_CONFIG",
                                      "/etc/fed-coordinator/coordinator.yaml", load_config,
                                      default_config_yaml, argv)
    if status is not None:
        return status
    import structlog
    from fed_common import logs

    from fed_coordinator.service.coordinator import Coordinator

    logs.configure(cfg.logging.level, stream=sys.stdout)
    structlog.contextvars.bind_contextvars(component="coordinator")
    return Coordinator(cfg, structlog.get_logger()).run()


if __name__ == "__main__":
    sys.exit(main())
