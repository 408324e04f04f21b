"""One JSON object per line, for every log record of every process (journald keeps them).

Why a stdlib bridge: uvicorn, TensorFlow, Flower and Pillow log through `logging`, not
structlog. Both paths end in the same `ProcessorFormatter`, so `journalctl -o cat` shows one
shape: {"event", "level", "timestamp", ...ids}. Ids bound with
`structlog.contextvars.bind_contextvars` (agent, campaign, run, round) are on every line.
Python warnings (TensorFlow's deprecations, Pillow's) go through `logging` too
(`captureWarnings`), so they arrive as JSON instead of raw multi-line text.
"""

from __future__ import annotations

import logging
import sys
import threading

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
_SHARED = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]
_write_lock = threading.Lock()  # raw pass-through lines and formatted records never interleave


def _stdlib_to_event(_logger, _name, event_dict: dict) -> dict:
    """A foreign record's message becomes the event; its logger name is kept as `logger`."""
    record = event_dict.get("_record")
    if record is not None:
        event_dict.setdefault("logger", record.name)
    return event_dict


def configure(level: str = "info", stream=None) -> None:
    """Route structlog and stdlib logging to `stream` (default stdout) as JSON lines."""
    stream = stream or sys.stdout
    threshold = LEVELS[level.lower()]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_SHARED, _stdlib_to_event],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(threshold)
    # One INFO line per HTTP request (httpx, under Flower) is noise on a Pi's journal, and in a
    # flwr-serverapp it is worse: Flower uploads the app's log lines over HTTP, each upload
    # logs its own request, and the uploader never idles (3.5 SuperLink writes a second,
    # benchmarks/fleet_scale.py). Their warnings and errors still come through.
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(threshold, logging.WARNING))
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*_SHARED, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )


def get_logger(**ids):
    """A logger with these ids bound (agent=..., campaign=..., run=...)."""
    return structlog.get_logger().bind(**ids)


def emit_raw(line: str, stream=None) -> None:
    """Pass a line that already is a JSON object (a child process's log) through unchanged."""
    out = stream or sys.stdout
    with _write_lock:
        out.write(line + "\n")
        out.flush()
