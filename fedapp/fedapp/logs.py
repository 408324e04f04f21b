"""JSON log lines for the app processes, through fed_common.logs like every other process.

Why stderr: `flwr-clientapp`/`flwr-serverapp` are child processes whose stderr the
SuperNode/SuperLink pass on to the journal; configured on first use so that importing
fedapp (the coordinator does, for images and the head) never reconfigures logging.
"""

from __future__ import annotations

import sys

from fed_common import logs

_configured = False


def get_logger(**ids):
    """A logger with these ids bound; the first call routes logging to stderr as JSON."""
    global _configured
    if not _configured:
        logs.configure("info", stream=sys.stderr)
        _configured = True
    return logs.get_logger(**ids)
