"""`fed-coordinator`: run the service, or check / print its configuration (exit 78 on bad config)."""

from __future__ import annotations

import argparse
import os
import sys

EX_CONFIG = 78
DEFAULT_CONFIG = os.environ.get("FED_COORDINATOR_CONFIG", "/etc/fed-coordinator/coordinator.yaml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fed-coordinator", description=__doc__)
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    parser.add_argument("command", nargs="?", default="run",
                        choices=["run", "validate-config", "print-default-config"])
    args = parser.parse_args(argv)
    from .config import ConfigError, default_config_yaml, load_config

    if args.command == "print-default-config":
        sys.stdout.write(default_config_yaml())
        return 0
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        where = f" in {args.config}:\n" if exc.errors else ": "
        print(f"fed-coordinator: invalid configuration{where}{exc}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "validate-config":
        print(f"{args.config}: valid")
        return 0
    import structlog

    from . import logs
    from .service import Coordinator

    logs.configure(cfg.logging.level.upper(), stream=sys.stdout)
    structlog.contextvars.bind_contextvars(component="coordinator")
    return Coordinator(cfg, structlog.get_logger()).run()


if __name__ == "__main__":
    sys.exit(main())
