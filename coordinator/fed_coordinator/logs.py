"""structlog setup: one JSON object per line (journald keeps it), the same as the agent's.

The processors live in `fed_agent.logs` so both daemons write identical line shapes; this
module adds the stdlib-logging bridge the coordinator needs (TensorFlow and uvicorn log there).
"""

from __future__ import annotations

import logging
import sys

import structlog
from fed_agent.logs import configure as configure_structlog


def configure(level: str = "INFO", stream=None) -> None:
    stream = stream or sys.stderr
    logging.basicConfig(stream=stream, level=getattr(logging, level.upper()), format="%(message)s")
    configure_structlog(level.lower(), stream=stream)


def get_logger(**ids):
    return structlog.get_logger().bind(**ids)
