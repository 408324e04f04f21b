"""structlog setup: one JSON object per line on stderr (journald keeps it)."""

from __future__ import annotations

import logging
import sys

import structlog


def configure(level: str = "INFO", stream=None) -> None:
    stream = stream or sys.stderr
    logging.basicConfig(stream=stream, level=getattr(logging, level), format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(stream),
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level)),
        cache_logger_on_first_use=False,
    )


def get_logger(**ids):
    return structlog.get_logger().bind(**ids)
