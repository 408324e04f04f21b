"""structlog JSON lines for the app processes (one object per line, ids included)."""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def get_logger(**ids):
    global _configured
    if not _configured:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
        structlog.configure(
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(),
            ],
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )
        _configured = True
    return structlog.get_logger().bind(**ids)
